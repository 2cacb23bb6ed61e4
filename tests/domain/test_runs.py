"""Run-ledger rules, property-tested: what an attempt accepts, finish spellings, run keys.

The expectations are written out here from DESIGN.md and the issue, not imported from the
module under test, so a change to the rules has to change this file too.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from azdev_ica.domain.runs import (
    AttemptState,
    EventRefusal,
    Phase,
    Provider,
    RunStatus,
    event_refusal,
    normalise_finish_status,
    run_key,
)

PROPERTY = settings(max_examples=100, deadline=None)

# DESIGN.md: "After a run finishes, only verify, rollback_* and monitor events are accepted."
AFTER_FINISH = {"verify", "rollback_initiated", "rollback_completed", "monitor"}
BEFORE_FINISH_ONLY = {"build", "test", "scan", "approval", "deploy"}

# The issue: success/failed/cancelled (ICA), Succeeded/SucceededWithIssues/Failed/Canceled
# (Azure Agent.JobStatus), success/failure/cancelled (GitHub job.status).
SPELLINGS: dict[str, tuple[str, bool]] = {
    "success": ("success", False),
    "failed": ("failed", False),
    "cancelled": ("cancelled", False),
    "Succeeded": ("success", False),
    "SucceededWithIssues": ("success", True),
    "Failed": ("failed", False),
    "Canceled": ("cancelled", False),
    "failure": ("failed", False),
}
KNOWN_LOWER = {spelling.lower() for spelling in SPELLINGS}

phases = st.sampled_from(list(Phase))
attempts = st.integers(min_value=1, max_value=1000)


def test_the_phases_are_the_nine_of_the_design():
    assert {phase.value for phase in Phase} == AFTER_FINISH | BEFORE_FINISH_ONLY


class TestEventRefusal:
    @PROPERTY
    @given(phase=phases, current=attempts, ahead=st.integers(1, 50), finished=st.booleans())
    def test_a_higher_attempt_is_a_rerun_and_always_taken(self, phase, current, ahead, finished):
        # Whatever state the current attempt is in, a new attempt reopens the run.
        state = AttemptState(attempt=current + ahead, finished=finished)
        for attempt_state in (None, state):
            assert (
                event_refusal(
                    phase=phase,
                    attempt=current + ahead,
                    current_attempt=current,
                    attempt_state=attempt_state,
                )
                is None
            )

    @PROPERTY
    @given(phase=phases, data=st.data())
    def test_an_attempt_that_never_started_is_unknown(self, phase, data):
        current = data.draw(attempts, label="current")
        attempt = data.draw(st.integers(1, current), label="attempt")
        refusal = event_refusal(
            phase=phase, attempt=attempt, current_attempt=current, attempt_state=None
        )
        assert refusal is EventRefusal.UNKNOWN_ATTEMPT

    @PROPERTY
    @given(phase=phases, data=st.data())
    def test_an_open_attempt_takes_every_phase(self, phase, data):
        current = data.draw(attempts, label="current")
        attempt = data.draw(st.integers(1, current), label="attempt")
        refusal = event_refusal(
            phase=phase,
            attempt=attempt,
            current_attempt=current,
            attempt_state=AttemptState(attempt=attempt, finished=False),
        )
        assert refusal is None

    @PROPERTY
    @given(phase=phases, data=st.data())
    def test_a_finished_attempt_takes_only_post_deploy_phases(self, phase, data):
        current = data.draw(attempts, label="current")
        attempt = data.draw(st.integers(1, current), label="attempt")
        refusal = event_refusal(
            phase=phase,
            attempt=attempt,
            current_attempt=current,
            attempt_state=AttemptState(attempt=attempt, finished=True),
        )
        if phase.value in AFTER_FINISH:
            assert refusal is None
        else:
            assert refusal is EventRefusal.FINISHED

    @pytest.mark.parametrize("phase", sorted(BEFORE_FINISH_ONLY))
    def test_the_pre_deploy_phases_are_refused_after_a_finish(self, phase):
        finished = AttemptState(attempt=1, finished=True)
        assert (
            event_refusal(phase=Phase(phase), attempt=1, current_attempt=1, attempt_state=finished)
            is EventRefusal.FINISHED
        )

    @pytest.mark.parametrize("phase", sorted(AFTER_FINISH))
    def test_the_post_deploy_phases_are_taken_after_a_finish(self, phase):
        finished = AttemptState(attempt=1, finished=True)
        assert (
            event_refusal(phase=Phase(phase), attempt=1, current_attempt=1, attempt_state=finished)
            is None
        )


def _recased(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(
            c.upper() if u else c.lower() for c, u in zip(word, upper, strict=True)
        )
    )


class TestFinishStatus:
    @pytest.mark.parametrize(("spelling", "expected"), sorted(SPELLINGS.items()))
    def test_every_provider_spelling_maps_to_the_ledger(self, spelling, expected):
        finish = normalise_finish_status(spelling)
        assert (finish.status.value, finish.flagged) == expected
        assert finish.provider_status == spelling

    def test_succeeded_with_issues_is_a_flagged_success(self):
        finish = normalise_finish_status("SucceededWithIssues")
        assert finish.status is RunStatus.SUCCESS
        assert finish.flagged is True

    @PROPERTY
    @given(data=st.data(), spelling=st.sampled_from(sorted(SPELLINGS)))
    def test_spellings_are_case_insensitive(self, data, spelling):
        recased = data.draw(_recased(spelling), label="recased")
        finish = normalise_finish_status(recased)
        assert (finish.status.value, finish.flagged) == SPELLINGS[spelling]
        # The provider's own spelling is kept as it was sent, for the audit trail.
        assert finish.provider_status == recased

    @PROPERTY
    @given(value=st.text(max_size=30))
    def test_unknown_spellings_are_refused(self, value):
        if value.strip().lower() in KNOWN_LOWER:
            return
        with pytest.raises(ValueError, match="unknown finish status"):
            normalise_finish_status(value)

    @pytest.mark.parametrize(
        "value",
        ["", "skipped", "Skipped", "succeed", "cancel", "partiallySucceeded", "ok", "0", "true"],
    )
    def test_near_misses_are_refused(self, value):
        with pytest.raises(ValueError, match="unknown finish status"):
            normalise_finish_status(value)

    def test_the_refusal_lists_what_is_accepted(self):
        with pytest.raises(ValueError, match="use one of") as caught:
            normalise_finish_status("skipped")
        for spelling in SPELLINGS:
            assert spelling in str(caught.value)


# Provider ids as DESIGN.md describes them: Azure project GUIDs, GitHub numeric repository ids.
project_ids = st.one_of(
    st.uuids().map(str),
    st.integers(min_value=1, max_value=10**12).map(str),
    st.from_regex(r"\A[A-Za-z0-9._-]{1,100}\Z"),
)
run_ids = st.integers(min_value=0, max_value=10**20 - 1).map(str)


def near_misses(valid: str) -> st.SearchStrategy[str]:
    """Valid values with a stray tail or head, strings of a nearby alphabet, and any text."""
    good = st.from_regex(valid, fullmatch=True)
    strays = st.sampled_from(["\n", "\r\n", ":", " ", "\u0660", "/"])
    return st.one_of(
        good,
        st.tuples(good, strays).map("".join),
        st.tuples(strays, good).map("".join),
        st.text(alphabet=st.sampled_from("0123456789aZ._-:\n /\u0660"), max_size=25),
        st.text(max_size=25),
    )


KEY_FORMAT = re.compile(r"\A(ado|gh):([^:]+):([0-9]+)\Z")


class TestRunKey:
    @PROPERTY
    @given(provider=st.sampled_from(list(Provider)), project_id=project_ids, run_id=run_ids)
    def test_the_key_round_trips(self, provider, project_id, run_id):
        key = run_key(provider, project_id, run_id)
        match = KEY_FORMAT.match(key)
        assert match is not None, key
        assert match.groups() == (provider.value, project_id, run_id)

    def test_the_prefixes_of_the_design(self):
        guid = "6c3f0e1a-1111-4c2b-9d1e-0123456789ab"
        assert run_key(Provider.AZURE, guid, "4711") == f"ado:{guid}:4711"
        assert run_key(Provider.GITHUB, "123456789", "99") == "gh:123456789:99"

    @PROPERTY
    @given(
        provider=st.sampled_from(list(Provider)),
        project_id=near_misses(r"[A-Za-z0-9._-]{1,100}"),
    )
    @example(provider=Provider.GITHUB, project_id="123:456")
    def test_a_project_id_outside_the_alphabet_is_refused(self, provider, project_id):
        valid = re.fullmatch(r"[A-Za-z0-9._-]{1,100}", project_id) is not None
        if valid:
            assert run_key(provider, project_id, "1").split(":")[1] == project_id
        else:
            with pytest.raises(ValueError, match="not a valid run key"):
                run_key(provider, project_id, "1")

    @PROPERTY
    @given(provider=st.sampled_from(list(Provider)), run_id=near_misses(r"[0-9]{1,20}"))
    @example(provider=Provider.AZURE, run_id="4711\n")
    def test_a_run_id_that_is_not_a_number_is_refused(self, provider, run_id):
        valid = re.fullmatch(r"[0-9]{1,20}", run_id) is not None
        if valid:
            assert run_key(provider, "p", run_id) == f"{provider.value}:p:{run_id}"
        else:
            with pytest.raises(ValueError, match="not a valid run key"):
                run_key(provider, "p", run_id)

    @pytest.mark.parametrize(
        ("project_id", "run_id"),
        [("p", "1\n"), ("p\n", "1"), ("a:b", "1"), ("p", "-1"), ("p", "1.0"), ("", "1")],
    )
    def test_separators_and_line_breaks_never_enter_a_key(self, project_id, run_id):
        with pytest.raises(ValueError, match="not a valid run key"):
            run_key(Provider.AZURE, project_id, run_id)
