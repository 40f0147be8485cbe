"""Data-loss prevention for requests (pure: no I/O, no await): detect, redact or block, and restore answers."""

from services.proxy.dlp.detectors import DETECTORS, Scanner
from services.proxy.dlp.errors import DlpBlocked, DlpConfigError, DlpError
from services.proxy.dlp.policy import BUILTIN_POLICIES, POLICY_NAME, Policy, Rule, load_policies
from services.proxy.dlp.redact import Redaction, apply
from services.proxy.dlp.restore import StreamRestorer, restore_completion, restore_text

__all__ = [
    "BUILTIN_POLICIES", "DETECTORS", "POLICY_NAME", "DlpBlocked", "DlpConfigError", "DlpError", "Policy",
    "Redaction", "Rule", "Scanner", "StreamRestorer", "apply", "load_policies", "restore_completion",
    "restore_text",
]
