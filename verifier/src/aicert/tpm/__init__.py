"""Pure parsers and checks for TPM 2.0 structures (no TPM library needed)."""
