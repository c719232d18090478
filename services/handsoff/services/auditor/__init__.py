"""The auditor: replay logs and streams with public keys only, verify every figure."""
