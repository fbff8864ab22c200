"""TPM access for the node agent: where the TPM is (`tcti`), what it does (`client`), and how a
swtpm is made to look like an Azure vTPM for development and tests (`provision`, `devca`).

`tcti` and `client` load tpm2-pytss only when they talk to a TPM; `provision` needs it at import.
"""

from .tcti import TpmSpec, parse_tpm_spec

__all__ = ["TpmSpec", "parse_tpm_spec"]
