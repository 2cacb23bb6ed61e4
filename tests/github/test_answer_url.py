"""Where the installation token may go: only to a deployment review URL of the configured
GitHub API (scheme, host, port and path prefix), nowhere else."""

from __future__ import annotations

import pytest

from azdev_ica.adapters.notify.github_review import on_api

REVIEW = "/repos/pacific/farmer-registry/actions/runs/42/deployment_protection_rule"


@pytest.mark.parametrize(
    ("url", "api", "allowed"),
    [
        (f"https://api.github.com{REVIEW}", "https://api.github.com", True),
        (f"https://API.GitHub.com{REVIEW}", "https://api.github.com/", True),
        (f"https://ghe.example.org/api/v3{REVIEW}", "https://ghe.example.org/api/v3", True),
        (f"https://ghe.example.org{REVIEW}", "https://ghe.example.org/api/v3", False),
        (f"http://api.github.com{REVIEW}", "https://api.github.com", False),
        (f"https://api.github.com:8443{REVIEW}", "https://api.github.com", False),
        (f"https://api.github.com.attacker.example{REVIEW}", "https://api.github.com", False),
        (f"https://attacker.example/{REVIEW}", "https://api.github.com", False),
        (f"https://api.github.com{REVIEW}?x=1", "https://api.github.com", False),
        (f"https://api.github.com{REVIEW}#x", "https://api.github.com", False),
        ("https://api.github.com/repos/a/b/issues/1", "https://api.github.com", False),
        (f"https://api.github.com/x{REVIEW}", "https://api.github.com", False),
        (f"ftp://api.github.com{REVIEW}", "https://api.github.com", False),
        ("", "https://api.github.com", False),
    ],
)
def test_only_review_urls_of_the_configured_api(url, api, allowed):
    assert on_api(url, api) is allowed
