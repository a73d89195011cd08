"""Stage 5: code generation (ir.Program + verify.Report -> standalone PyTorch source)."""
