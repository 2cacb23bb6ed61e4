"""The policy file: the shipped example, errors naming the line, the hash, `ica policy validate`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from azdev_ica.cli.main import main
from azdev_ica.errors import PolicyError
from azdev_ica.policy import load_policy_file, parse_policy
from tests.conftest import EXAMPLE_POLICY

EXAMPLE = EXAMPLE_POLICY.read_text(encoding="utf-8")

MINIMAL = """\
version: 1
tenants:
  - code: ws
    name: Samoa
    timezone: Pacific/Apia
  - code: to
    name: Tonga
    timezone: Pacific/Tongatapu
stages:
  - name: development
  - name: production
    production: true
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.yaml")
    problems: list[str] = caught.value.extensions.get("problems", [caught.value.detail])
    return problems


def line_of(problem: str) -> int:
    match = re.match(r"policy\.yaml:(\d+): ", problem)
    assert match, f"no line number in {problem!r}"
    return int(match.group(1))


class TestTheExample:
    def test_it_loads_with_the_five_tenants_and_five_stages_of_seed_002(self):
        policy = load_policy_file(EXAMPLE_POLICY)
        assert list(policy.tenants) == ["ck", "ws", "sb", "to", "vu"]
        assert [stage.name for stage in policy.stages] == [
            "development",
            "test",
            "staging",
            "production",
            "dr",
        ]
        assert policy.tenants["to"].timezone == "Pacific/Tongatapu"
        assert policy.stage("production").production is True
        assert policy.stage("dr").promotion is False
        assert policy.stage("development").production is False
        assert re.fullmatch(r"[0-9a-f]{64}", policy.sha256)

    def test_defaults_fill_what_a_stage_leaves_out(self):
        policy = parse_policy(MINIMAL)
        development = policy.stage("development")
        assert (development.title, development.production, development.promotion) == (
            "Development",
            False,
            True,
        )
        assert policy.stage("qa") is None


class TestErrorsNameTheLine:
    def test_an_unknown_field_points_at_the_field(self):
        text = MINIMAL.replace(
            "    timezone: Pacific/Tongatapu\n", "    timezone: Pacific/Tongatapu\n    flag: red\n"
        )
        [problem] = problems_of(text)
        assert line_of(problem) == 9
        assert "flag" in problem
        assert "/tenants/1" in problem

    def test_an_unknown_top_level_field_points_at_the_field(self):
        # (`gates` was the example here until the gate sections became part of the schema.)
        [problem] = problems_of(MINIMAL + "skip_approval: {}\n")
        assert line_of(problem) == 13
        assert "skip_approval" in problem

    def test_a_wrong_type_points_at_the_value(self):
        [problem] = problems_of(MINIMAL.replace("production: true", 'production: "yes"'))
        assert line_of(problem) == 12
        assert "/stages/1/production" in problem
        assert "boolean" in problem

    def test_a_missing_field_points_at_its_parent(self):
        [problem] = problems_of(MINIMAL.replace("    name: Tonga\n", ""))
        assert line_of(problem) == 6
        assert "'name' is a required property" in problem

    def test_every_problem_is_listed(self):
        text = MINIMAL.replace("code: ws", "code: WS").replace("name: development", "name: 7")
        problems = problems_of(text)
        assert sorted(line_of(p) for p in problems) == [3, 10]

    def test_a_duplicate_tenant_code_points_at_the_second(self):
        [problem] = problems_of(MINIMAL.replace("code: to", "code: ws"))
        assert line_of(problem) == 6
        assert "duplicate 'ws'" in problem

    def test_a_duplicate_stage_name_points_at_the_second(self):
        [problem] = problems_of(MINIMAL.replace("name: production", "name: development"))
        assert line_of(problem) == 11
        assert "duplicate 'development'" in problem

    def test_a_duplicate_yaml_key_points_at_the_second(self):
        # PyYAML would silently keep the last `timezone`; a policy must not.
        text = MINIMAL.replace(
            "    timezone: Pacific/Apia\n", "    timezone: Pacific/Apia\n    timezone: Asia/Tokyo\n"
        )
        [problem] = problems_of(text)
        assert line_of(problem) == 6
        assert "duplicate key 'timezone'" in problem

    def test_a_duplicate_top_level_key(self):
        [problem] = problems_of(MINIMAL + "version: 1\n")
        assert line_of(problem) == 13

    @pytest.mark.parametrize("zone", ["Pacific/Atlantis", "UTC+13", "../etc/passwd", "Samoa"])
    def test_an_unknown_iana_time_zone_points_at_it(self, zone):
        [problem] = problems_of(MINIMAL.replace("Pacific/Tongatapu", zone))
        assert line_of(problem) == 8
        assert "IANA time zone" in problem

    @pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n", "~\n"])
    def test_an_empty_file(self, text):
        [problem] = problems_of(text)
        assert "empty" in problem

    @pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
    def test_a_document_that_is_not_a_mapping(self, text):
        [problem] = problems_of(text)
        assert line_of(problem) == 1
        assert "not of type 'object'" in problem

    @pytest.mark.parametrize(
        ("text", "line"),
        [
            # PyYAML names the line where it noticed: the one after the unclosed bracket.
            (MINIMAL.replace("  - code: to", "  - code: [to"), 7),
            (MINIMAL.replace("    name: Samoa", "\tname: Samoa"), 4),
            ("version: 1\ntenants: {a: 1\n", 3),
        ],
    )
    def test_a_yaml_syntax_error(self, text, line):
        [problem] = problems_of(text)
        assert "not valid YAML" in problem
        assert line_of(problem) == line

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("version: !!python/name:os.system\n", "not valid YAML"),
            ("version: !!binary 'xx'\n", "not valid YAML"),
            ("version: 1\n? [a, b]\n: 1\n", "not valid YAML"),
            ("version: 1\nname: &a [*a]\n", "recursive alias"),
            ("[" * 2000 + "]" * 2000, "nested too deeply"),
            (
                "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                + "".join(
                    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
                    for i in range(8)
                ),
                "aliases expand",
            ),
        ],
        ids=["python-tag", "bad-binary", "list-key", "recursive-alias", "deep", "alias-bomb"],
    )
    def test_hostile_yaml_is_a_policy_error_not_a_crash(self, text, message):
        [problem] = problems_of(text)
        assert message in problem

    def test_anchors_and_merge_keys_still_work(self):
        text = MINIMAL.replace(
            "  - code: to\n    name: Tonga\n    timezone: Pacific/Tongatapu\n",
            "  - &tonga {code: to, name: Tonga, timezone: Pacific/Tongatapu}\n"
            "  - <<: *tonga\n    code: vu\n    name: Vanuatu\n",
        )
        assert list(parse_policy(text).tenants) == ["ws", "to", "vu"]


class TestHash:
    def test_formatting_and_comments_do_not_change_the_hash(self):
        reformatted = (
            "# a different comment\n"
            "stages: [{name: development}, {production: true, name: production}]\n"
            "tenants:\n"
            "- {timezone: Pacific/Apia, code: ws, name: 'Samoa'}\n"
            '- {code: "to", name: Tonga, timezone: Pacific/Tongatapu}   # trailing comment\n'
            "version: 1\n"
        )
        assert parse_policy(reformatted).sha256 == parse_policy(MINIMAL).sha256

    @pytest.mark.parametrize(
        ("old", "new"),
        [
            ("name: Samoa", "name: Samoa Islands"),
            ("Pacific/Apia", "Pacific/Auckland"),
            ("production: true", "production: false"),
            ("  - name: development\n", "  - name: development\n    title: Dev\n"),
        ],
    )
    def test_a_content_change_changes_the_hash(self, old, new):
        changed = MINIMAL.replace(old, new)
        assert changed != MINIMAL
        assert parse_policy(changed).sha256 != parse_policy(MINIMAL).sha256

    def test_the_order_of_tenants_is_content(self):
        swapped = MINIMAL.replace("code: ws", "code: tmp").replace("code: to", "code: ws")
        swapped = swapped.replace("code: tmp", "code: to")
        assert parse_policy(swapped).sha256 != parse_policy(MINIMAL).sha256


class TestValidateCommand:
    def test_the_example_is_valid(self, capsys):
        assert main(["policy", "validate", str(EXAMPLE_POLICY)]) == 0
        out = capsys.readouterr().out
        assert "valid" in out
        assert "5 tenants, 5 stages" in out
        assert load_policy_file(EXAMPLE_POLICY).sha256 in out

    def test_a_bad_file_exits_3_naming_the_line(self, tmp_path: Path, capsys):
        bad = tmp_path / "bad.yaml"
        bad.write_text(MINIMAL.replace("Pacific/Tongatapu", "Pacific/Nowhere"), encoding="utf-8")
        assert main(["policy", "validate", str(bad)]) == 3
        captured = capsys.readouterr()
        assert f"{bad}:8:" in captured.err
        assert "Pacific/Nowhere" in captured.err
        assert "Traceback" not in captured.err
        assert captured.out == ""

    def test_a_missing_file_exits_3(self, tmp_path: Path, capsys):
        assert main(["policy", "validate", str(tmp_path / "absent.yaml")]) == 3
        assert "cannot read" in capsys.readouterr().err

    def test_a_file_that_is_not_utf8_exits_3(self, tmp_path: Path, capsys):
        bad = tmp_path / "latin1.yaml"
        bad.write_bytes(MINIMAL.replace("Samoa", "Sāmoa").encode("utf-16"))
        assert main(["policy", "validate", str(bad)]) == 3
        assert "cannot read" in capsys.readouterr().err
