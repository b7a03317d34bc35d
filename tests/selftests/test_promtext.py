"""The Prometheus text-format parser: the exposition format's rules, a real vLLM page, and a round-trip property."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_dsbench import promtext
from pytest_dsbench.engines.vllm.servermetrics import SERVER_METRICS as VLLM
from pytest_dsbench.load.server_metrics import read_values

REAL_VLLM_PAGE = Path(__file__).parent / "data" / "vllm-0.32-cpu-mtp.metrics.txt"
"""GET /metrics of a real vLLM 0.32 CPU build serving fixtures/tiny-r1 with an MTP layer added
(``--speculative-config '{"method": "deepseek_mtp", "num_speculative_tokens": 1}'``), after one request."""


def test_real_vllm_page_parses_and_gives_the_spec_decode_counters() -> None:
    page = promtext.parse(REAL_VLLM_PAGE.read_text())
    assert page.families["vllm:spec_decode_num_drafts_total"].type == "counter"
    values = read_values(page, VLLM)
    assert values["spec_drafts"] == 46.0 and values["spec_draft_tokens"] == 46.0
    assert values["spec_accepted_tokens"] == 1.0
    assert values["prefix_cache_hits"] == 0.0 and values["kv_cache_usage"] == 0.0


def test_histogram_samples_join_their_family_with_the_inf_bucket() -> None:
    text = (
        "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
        'lat_seconds_bucket{le="0.1"} 1\nlat_seconds_bucket{le="+Inf"} 3\nlat_seconds_sum 0.7\nlat_seconds_count 3\n'
    )
    family = promtext.parse(text).families["lat_seconds"]
    assert family.type == "histogram" and family.help == "Latency."
    assert [s.labels.get("le") for s in family.samples] == ["0.1", "+Inf", None, None]
    assert promtext.parse(text).value("lat_seconds_count") == 3.0


def test_label_values_unescape_backslash_quote_and_newline() -> None:
    sample = promtext.parse_sample('m{path="C:\\\\dir\\\\",msg="say \\"hi\\"\\nbye",} 1 1700000000000')
    assert sample.labels == {"path": "C:\\dir\\", "msg": 'say "hi"\nbye'}
    assert sample.timestamp_ms == 1700000000000


def test_special_values_nan_and_infinities() -> None:
    page = promtext.parse("a NaN\nb +Inf\nc -Inf\nd 1.5e3\n")
    assert math.isnan(page.samples("a")[0].value)
    assert page.value("b") == math.inf and page.value("c") == -math.inf and page.value("d") == 1500.0
    assert page.value("a") is None  # NaN samples are left out of combined values


def test_comments_blank_lines_and_openmetrics_eof_are_ignored() -> None:
    page = promtext.parse("# just a comment\n\n   \nx 1\n# EOF\n")
    assert page.value("x") == 1.0


def test_help_text_unescapes_backslash_and_newline() -> None:
    page = promtext.parse("# HELP x line one\\nline \\\\two\nx 1\n")
    assert page.families["x"].help == "line one\nline \\two"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("# TYPE x gauge\n# TYPE x gauge\nx 1\n", "a second TYPE line"),
        ("x 1\n# TYPE x gauge\n", "TYPE of 'x' after its samples"),
        ("# TYPE x meter\n", "unknown TYPE 'meter'"),
        ("x one\n", "'one' is not a sample value"),
        ('x{a="1} 2\n', "no closing quote"),
        ('x{a="1",a="2"} 2\n', "label 'a' appears twice"),
        ("x{a=1} 2\n", "must be quoted"),
        ("x 1 2 3\n", "got 3 token(s)"),
        ("# TYPE h histogram\nh_bucket 1\n", "has no 'le' label"),
    ],
)
def test_what_the_format_forbids_is_an_error_naming_the_line(text: str, problem: str) -> None:
    with pytest.raises(promtext.PromParseError, match="line [0-9]+: .*" if problem else None) as info:
        promtext.parse(text)
    assert problem in str(info.value)


# -- round trip: any page a compliant writer produces parses back to what was written --------------------------------
_names = st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,12}", fullmatch=True)
_label_names = st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True).filter(lambda n: n != "le")
_values = st.one_of(st.floats(allow_nan=False), st.just(math.inf), st.just(-math.inf))
_label_sets = st.dictionaries(_label_names, st.text(max_size=12), max_size=3)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _render(value: float) -> str:
    return "+Inf" if value == math.inf else "-Inf" if value == -math.inf else repr(value)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        _names,
        st.tuples(st.sampled_from(["counter", "gauge", "untyped"]), st.from_regex(r"[A-Za-z0-9 .\\\n]{0,20}",
                                                                                   fullmatch=True),
                  st.lists(st.tuples(_label_sets, _values), min_size=1, max_size=3)),
        min_size=1,
        max_size=4,
    )
)
def test_a_written_page_parses_back_to_its_families_samples_and_labels(
    families: dict[str, tuple[str, str, list[tuple[dict[str, str], float]]]],
) -> None:
    lines = []
    for name, (kind, help_text, samples) in families.items():
        lines.append(f"# HELP {name} " + help_text.replace("\\", "\\\\").replace("\n", "\\n"))
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            body = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{{{body}}} {_render(value)}" if labels else f"{name} {_render(value)}")
    page = promtext.parse("\n".join(lines) + "\n")
    for name, (kind, help_text, samples) in families.items():
        family = page.families[name]
        assert family.type == kind
        assert family.help == help_text.strip(" ")
        assert [(s.labels, s.value) for s in family.samples] == samples
