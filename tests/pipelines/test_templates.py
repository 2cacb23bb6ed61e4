"""The pipeline files users adopt ICA through: valid against the published schemas (the ones
`check-jsonschema` vendors; no network), every `ica` command in them a real command with valid
flags (parsed by the CLI's own parser), no secret written down, `az` never called, `ica`
installed only with hashes. Each check is also shown to catch a broken copy."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.scripts import (
    AZURE_EXAMPLE,
    AZURE_STEP,
    AZURE_TEMPLATE,
    GITHUB_ACTION,
    GITHUB_EXAMPLE,
    ROOT,
    CommandError,
    all_ica_commands,
    check_command,
    ica_commands,
    inlined_secrets,
    load,
    scripts,
)

CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
SCHEMAS = [
    (AZURE_TEMPLATE, "vendor.azure-pipelines"),
    (AZURE_STEP, "vendor.azure-pipelines"),
    (AZURE_EXAMPLE, "vendor.azure-pipelines"),
    (GITHUB_ACTION, "vendor.github-actions"),
    (GITHUB_EXAMPLE, "vendor.github-workflows"),
]
ALL_FILES = [path for path, _ in SCHEMAS]


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with its vendored schema, with every proxy pointing at a closed port:
    a schema fetched from the network would fail the run."""
    command = [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, "--color", "never"]
    if schema == "vendor.azure-pipelines":
        # Expands `${{ if }}` / `${{ each }}` the way the Azure Pipelines language server does.
        command += ["--data-transform", "azure-pipelines"]
    dead = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "NO_PROXY": "",
        "no_proxy": "",
        "XDG_CACHE_HOME": str(ROOT / ".no-such-cache"),
    }
    return subprocess.run(
        [*command, str(path)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(("path", "schema"), SCHEMAS, ids=lambda v: getattr(v, "name", v))
def test_the_file_is_valid_against_its_published_schema(path, schema):
    result = validate(path, schema)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_the_schema_check_catches_a_broken_copy(tmp_path):
    cases = [
        (AZURE_TEMPLATE, "vendor.azure-pipelines", "  - job: build\n", "  - jobb: build\n"),
        (AZURE_STEP, "vendor.azure-pipelines", "scriptLocation:", "scriptLocatoin:"),
        (GITHUB_ACTION, "vendor.github-actions", "using: composite", "using: compost"),
        (GITHUB_EXAMPLE, "vendor.github-workflows", "runs-on:", "runs-onn:"),
    ]
    for source, schema, good, bad in cases:
        text = source.read_text()
        assert good in text, (source.name, good)
        copy = tmp_path / source.name
        copy.write_text(text.replace(good, bad, 1))
        assert validate(copy, schema).returncode != 0, source.name


# --- every `ica` command is a real command --------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_every_ica_command_parses_with_the_cli_parser(path):
    for argv in all_ica_commands(path):
        args = check_command(argv)
        assert callable(args.func)


def commands_used(*paths: Path) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for argv in all_ica_commands(path):
            words = [word for word in argv[:3] if not word.startswith("-")]
            found.add(" ".join(words))
    return found


def test_the_hooks_are_all_there():
    expected = {
        "run start",
        "run event build",
        "run event test",
        "run event scan",
        "run event deploy",
        "run event verify",
        "run event rollback_initiated",
        "run event rollback_completed",
        "approval wait",
        "gate evaluate",
        "run finish",
    }
    assert commands_used(AZURE_TEMPLATE) == expected
    assert commands_used(GITHUB_ACTION) == expected


def test_every_pipeline_facing_command_answers_json():
    for path in (AZURE_TEMPLATE, GITHUB_ACTION):
        for argv in all_ica_commands(path):
            assert check_command(argv).output == "json", argv


def test_the_finish_runs_always_with_the_job_status():
    template = AZURE_TEMPLATE.read_text()
    finish = template[template.index("displayName: ICA run finish\n") :]
    assert finish.split("script:")[0].count("condition: always()") == 1
    assert 'ica run finish --status "$(Agent.JobStatus)"' in finish
    workflow = load(GITHUB_EXAMPLE)
    last = workflow["jobs"]["deploy"]["steps"][-1]
    assert last["if"] == "always()"
    assert last["with"] == {"phase": "finish", "status": "${{ job.status }}"}


def test_a_gate_precedes_every_deploy_step():
    steps = load(AZURE_TEMPLATE)["stages"][1]["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"]
    [each] = [
        step
        for step in steps
        if isinstance(step, dict) and "each step in parameters.deploySteps" in str(step)
    ]
    body = next(iter(each.values()))
    assert body[0]["parameters"]["script"].count("ica gate evaluate") == 1
    assert body[1] == {"${{ each pair in step }}": {"${{ pair.key }}": "${{ pair.value }}"}}
    # The rollback steps run only once the gate's rollback rule allowed (the step before
    # them sets ICA_ROLLBACK_ALLOWED only on allow).
    [rollback] = [
        step
        for step in steps
        if isinstance(step, dict) and "each step in parameters.rollbackSteps" in str(step)
    ]
    [only] = next(iter(rollback.values()))
    assert only["condition"] == "and(failed(), eq(variables['ICA_ROLLBACK_ALLOWED'], 'true'))"
    workflow = load(GITHUB_EXAMPLE)["jobs"]["deploy"]["steps"]
    deploys = [i for i, s in enumerate(workflow) if "deploy.sh" in str(s.get("run"))]
    assert len(deploys) == 2  # the deploy, and the rollback's deploy
    assert workflow[deploys[0] - 1]["with"]["phase"] == "gate"
    assert workflow[deploys[1] - 1]["with"]["phase"] == "rollback"  # the gate's rollback rule
    assert "ICA_ROLLBACK_ALLOWED == 'true'" in workflow[deploys[1]]["if"]


def test_a_bad_flag_in_a_copy_is_caught(tmp_path):
    for source, good, bad in [
        (AZURE_TEMPLATE, "--cost-impact-minor", "--cost-impact-major"),
        (GITHUB_ACTION, "ica run event deploy", "ica run event deploi"),
        (GITHUB_ACTION, "--interval 15", "--intervall 15"),
        (
            AZURE_TEMPLATE,
            'ica run finish --status "$(Agent.JobStatus)"',
            "ica run finish --status Done",
        ),
    ]:
        text = source.read_text()
        assert good in text, (source.name, good)
        copy = tmp_path / source.name
        copy.write_text(text.replace(good, bad))
        commands = all_ica_commands(copy)
        with pytest.raises(CommandError):
            [check_command(argv) for argv in commands]


def test_the_extractor_reads_continuations_macros_and_case_arms():
    script = (
        "set -e\n"
        'case "$X" in a) ica run event scan --set "p=$passed" >"$out" ;;\n'
        '  b) ica gate evaluate --tenant "${{ parameters.tenant }}" \\\n'
        '       --wait "$(Wait.Seconds)" --output json ;; esac\n'
        "# ica not a command here\n"
        'if true; then ica run finish --status "$(Agent.JobStatus)"; fi\n'
        "echo ica is not at a command position\n"
    )
    assert ica_commands(script) == [
        ["run", "event", "scan", "--set", "p=1"],
        ["gate", "evaluate", "--tenant", "1", "--wait", "1", "--output", "json"],
        ["run", "finish", "--status", "Succeeded"],
    ]


# --- secrets, az, installation -------------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_no_secret_is_written_down(path):
    assert inlined_secrets(path) == []


def test_an_inlined_secret_in_a_copy_is_caught(tmp_path):
    key = "ica_abcdefghij_" + "Q" * 43
    cases = [
        (AZURE_STEP, "ICA_TOKEN: $(${{ parameters.apiKeySecret }})", f"ICA_TOKEN: {key}"),
        (AZURE_TEMPLATE, "ica run start --tenant", f"ICA_TOKEN={key} ica run start --tenant"),
        (GITHUB_EXAMPLE, "phase: start,", 'phase: start, api-key: "s3cr3t-s3cr3t-s3cr3t",'),
        (GITHUB_ACTION, "ICA_TOKEN: ${{ inputs.api-key }}", "ICA_TOKEN: hunter2hunter2hunter2"),
    ]
    for source, good, bad in cases:
        copy = tmp_path / source.name
        text = source.read_text()
        assert good in text, (source.name, good)
        copy.write_text(text.replace(good, bad, 1))
        assert inlined_secrets(copy) != [], source.name


AZ_CALL = re.compile(r"(^|[;&|(]\s*|\bthen\s+|\bdo\s+)az\s", re.MULTILINE)


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: p.name)
def test_az_is_never_called_and_ica_is_installed_with_hashes(path):
    texts = list(scripts(load(path)))
    assert not any(AZ_CALL.search(text) for text in texts)
    installs = [text for text in texts if "pip install" in text]
    for text in installs:
        assert "--require-hashes" in text
        assert "--no-deps" in text  # the pipeline client needs nothing beyond the stdlib
    assert AZ_CALL.search("set -e\naz account get-access-token\n")


def test_the_readme_shows_the_example_pipelines_verbatim():
    readme = (ROOT / "README.md").read_text()
    assert AZURE_EXAMPLE.read_text() in readme
    assert GITHUB_EXAMPLE.read_text() in readme
    for check in ("Invoke REST API", "Callback", "Required template", "Exclusive lock"):
        assert check in readme
