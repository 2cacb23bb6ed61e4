"""The policy file: one YAML document, validated by a JSON Schema shipped with ICA."""

from azdev_ica.policy.loader import load_policy_file, parse_policy
from azdev_ica.policy.model import ApprovalPolicy, Policy, Stage, Tenant

__all__ = ["ApprovalPolicy", "Policy", "Stage", "Tenant", "load_policy_file", "parse_policy"]
