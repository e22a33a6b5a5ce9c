"""The Grafana dashboard (deploy/grafana/authgate-dashboard.json) against the real metrics.

A dashboard goes stale silently: a renamed metric or label leaves a panel empty, and
nothing fails. So every PromQL query is read here (a small tokenizer, enough for the
PromQL a dashboard uses) and each metric name, label name and fixed label value it uses
is checked against what the service really exposes: a child process installs the
metrics, records one of everything through the calls the running service makes, and
prints its `/metrics` text, once as a single process and once in the multiprocess mode
that `authgate proxy --workers N` uses.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from credentials import observe
from proxy import metrics
from proxy.context import ProxyContext

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "authgate-dashboard.json"
GRID_COLUMNS = 24
DATASOURCE_UID = "${datasource}"
# Prometheus attaches these to every series of a scrape target.
TARGET_LABELS = frozenset({"job", "instance"})
RATE_FUNCTIONS = frozenset({"rate", "irate", "increase"})

Json = dict[str, Any]


# --- the metrics the service exposes ------------------------------------------------------


@dataclass(frozen=True)
class Exposed:
    """Sample names (`_total`, `_bucket`, ... as scraped) with their label names and the
    type of the family each belongs to."""

    labels: dict[str, frozenset[str]]
    kinds: dict[str, str]
    families_without_samples: frozenset[str]


def record_one_of_each_and_print_exposition() -> None:
    """Run in a child process: give every labelled family a sample, then print `/metrics`.

    Families with fixed label sets already have their series from import; the per-request
    ones and the token refreshes appear with their first sample.
    """
    metrics.install()
    asyncio.run(_record_one_request())
    observer = observe.current()
    observer.refresh_event("OAUTH2", "attempt")
    observer.refresh_event("OAUTH2", "refreshed")
    observer.store_read()
    sys.stdout.write(metrics.render(metrics.multiprocess_dir()).decode())


async def _record_one_request() -> None:
    # Imported here: the helper belongs to another test module, and only the child needs it.
    from tests.proxy.test_metrics import received

    request, reply = await received("GET", "/proxy/items")
    ctx = ProxyContext(request, reply, request_id="dashboard", started=time.perf_counter())
    outcome = ctx.outcome
    outcome.status = 200
    outcome.upstream_host = "provider.example"
    outcome.upstream_seconds = 0.01
    outcome.bytes_out = 1
    outcome.retry_reasons = ["network"]
    outcome.rate_limit = "provider"
    metrics.request_started()
    metrics.request_finished(ctx, now=time.perf_counter())


def scrape_child(multiprocess_dir: Path | None) -> Exposed:
    environ = {
        name: value for name, value in os.environ.items() if name != metrics.MULTIPROC_DIR_VARIABLE
    }
    if multiprocess_dir is not None:
        environ[metrics.MULTIPROC_DIR_VARIABLE] = str(multiprocess_dir)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {__name__} as d; d.{record_one_of_each_and_print_exposition.__name__}()",
        ],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert child.returncode == 0, child.stderr
    return parse_exposition(child.stdout)


def parse_exposition(text: str) -> Exposed:
    labels: dict[str, set[str]] = {}
    kinds: dict[str, str] = {}
    empty: set[str] = set()
    for family in text_string_to_metric_families(text):
        if not family.samples:
            empty.add(family.name)
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
            kinds[sample.name] = family.type
    return Exposed(
        {name: frozenset(names) for name, names in labels.items()}, kinds, frozenset(empty)
    )


@pytest.fixture(scope="module")
def single_process() -> Exposed:
    return scrape_child(None)


@pytest.fixture(scope="module")
def multiprocess(tmp_path_factory: pytest.TempPathFactory) -> Exposed:
    return scrape_child(tmp_path_factory.mktemp("metrics"))


# --- reading PromQL -----------------------------------------------------------------------

AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile"}
)
FUNCTIONS = frozenset(
    {"abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp"}
    | {"clamp_max", "clamp_min", "count_over_time", "delta", "deriv", "exp", "floor"}
    | {"histogram_quantile", "idelta", "increase", "irate", "label_join", "label_replace"}
    | {"last_over_time", "ln", "log2", "log10", "max_over_time", "min_over_time"}
    | {"predict_linear", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn"}
    | {"sort", "sort_desc", "sqrt", "sum_over_time", "time", "timestamp", "vector"}
)
GROUPING_MODIFIERS = frozenset({"by", "without"})
MATCHING_MODIFIERS = frozenset({"on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"bool", "and", "or", "unless", "inf", "nan"})
MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<range>\[[^\]]*\])                 # [5m], [$__rate_interval], [1h:5m]
    | (?P<number>[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<variable>\$\{?\w+\}?)
    | (?P<operator>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
    | (?P<space>\s+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass(frozen=True)
class Matcher:
    label: str
    operator: str
    value: str


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[Matcher, ...]
    position: int  # index of the metric name among the tokens
    function: str | None  # what the innermost enclosing parentheses belong to


@dataclass(frozen=True)
class Grouping:
    """`by (...)`, `without (...)`, `on (...)`, `ignoring (...)`: labels that must exist
    on every metric whose selector lies strictly between tokens `start` and `end`."""

    keyword: str
    labels: tuple[str, ...]
    start: int
    end: int


@dataclass
class Query:
    selectors: list[Selector]
    groupings: list[Grouping]
    problems: list[str]

    def by_labels(self) -> set[str]:
        return {label for g in self.groupings if g.keyword == "by" for label in g.labels}


def tokenize(expr: str) -> tuple[list[Token], list[str]]:
    tokens: list[Token] = []
    position = 0
    while position < len(expr):
        found = _TOKEN.match(expr, position)
        if found is None or found.lastgroup is None:
            return tokens, [f"cannot read {expr[position:]!r}"]
        if found.lastgroup != "space":
            tokens.append(Token(found.lastgroup, found.group()))
        position = found.end()
    return tokens, []


def matching_parentheses(tokens: list[Token]) -> tuple[dict[int, int], list[str]]:
    closing: dict[int, int] = {}
    open_at: list[int] = []
    for index, token in enumerate(tokens):
        if token.text == "(":
            open_at.append(index)
        elif token.text == ")":
            if not open_at:
                return closing, ["unbalanced ')'"]
            closing[open_at.pop()] = index
    return closing, ["unbalanced '('"] if open_at else []


class _Reader:
    """One pass over the tokens, collecting selectors and grouping clauses."""

    def __init__(self, tokens: list[Token], closing: dict[int, int]) -> None:
        self.tokens = tokens
        self.closing = closing
        self.query = Query([], [], [])
        # Which function or aggregation each opening parenthesis belongs to.
        self.owner: dict[int, str] = {}
        self.label_list_tokens: set[int] = set()

    def text(self, index: int) -> str:
        return self.tokens[index].text if index < len(self.tokens) else ""

    def read(self) -> Query:
        index = 0
        while index < len(self.tokens):
            index = self.step(index)
        return self.query

    def step(self, index: int) -> int:
        token = self.tokens[index]
        if index in self.label_list_tokens or token.kind != "name":
            if token.text == "{":
                self.query.problems.append("a selector without a metric name")
            return index + 1
        name = token.text
        if name in AGGREGATIONS:
            return self.aggregation(index)
        if name in FUNCTIONS:
            if self.text(index + 1) != "(":
                self.query.problems.append(f"function {name} without arguments")
            else:
                self.owner[index + 1] = name
            return index + 1
        if name in GROUPING_MODIFIERS:
            self.query.problems.append(f"'{name}' outside an aggregation")
            return index + 1
        if name in MATCHING_MODIFIERS:
            return self.matching(index)
        if name in KEYWORDS:
            return index + 1
        if self.text(index + 1) == "(":
            self.query.problems.append(f"unknown function {name}")
            return index + 1
        return self.selector(index)

    def label_list(self, opening: int) -> tuple[str, ...]:
        """The names in `( a, b )` starting at `opening`; marks them as read."""
        end = self.closing.get(opening, opening)
        names = []
        for inner in range(opening + 1, end):
            self.label_list_tokens.add(inner)
            if self.tokens[inner].kind == "name":
                names.append(self.tokens[inner].text)
            elif self.tokens[inner].text != ",":
                self.query.problems.append(f"unexpected {self.tokens[inner].text!r} in labels")
        self.label_list_tokens.update({opening, end})
        return tuple(names)

    def aggregation(self, index: int) -> int:
        """`sum by (a) (...)` or `sum (...) by (a)`; the argument is read as usual."""
        name = self.tokens[index].text
        argument = index + 1
        leading = self.grouping_clause(argument)
        if leading is not None:
            argument = self.closing[argument + 1] + 1
        if self.text(argument) != "(":
            self.query.problems.append(f"aggregation {name} without an argument")
            return index + 1
        self.owner[argument] = name
        end = self.closing[argument]
        clause = leading or self.grouping_clause(end + 1)
        if clause is not None:
            keyword, labels = clause
            self.query.groupings.append(Grouping(keyword, labels, argument, end))
        return index + 1

    def grouping_clause(self, index: int) -> tuple[str, tuple[str, ...]] | None:
        """`by (a, b)` or `without (a)` at `index`, marked as read."""
        keyword = self.text(index)
        if keyword not in GROUPING_MODIFIERS or self.text(index + 1) != "(":
            return None
        self.label_list_tokens.add(index)
        return keyword, self.label_list(index + 1)

    def matching(self, index: int) -> int:
        self.label_list_tokens.add(index)
        if self.text(index + 1) != "(":
            return index + 1  # group_left / group_right without labels
        labels = self.label_list(index + 1)
        # Vector matching labels must exist on both sides: on every metric of the query.
        self.query.groupings.append(Grouping(self.text(index), labels, -1, len(self.tokens)))
        return index + 1

    def selector(self, index: int) -> int:
        name = self.tokens[index].text
        matchers: list[Matcher] = []
        after = index + 1
        if self.text(after) == "{":
            after = self.matchers(after + 1, matchers)
        self.query.selectors.append(
            Selector(name, tuple(matchers), index, self.enclosing_function(index))
        )
        return after

    def matchers(self, index: int, into: list[Matcher]) -> int:
        while self.text(index) != "}":
            if index + 3 > len(self.tokens):
                self.query.problems.append("a selector without its closing '}'")
                return len(self.tokens)
            label, operator, value = self.tokens[index : index + 3]
            if (
                label.kind != "name"
                or operator.text not in MATCH_OPERATORS
                or value.kind != "string"
            ):
                self.query.problems.append(f"unreadable matcher at {label.text!r}")
                return len(self.tokens)
            into.append(Matcher(label.text, operator.text, json.loads(value.text)))
            index += 3
            if self.text(index) == ",":
                index += 1
        return index + 1

    def enclosing_function(self, index: int) -> str | None:
        innermost = max((o for o, c in self.closing.items() if o < index < c), default=None)
        return None if innermost is None else self.owner.get(innermost)


def read_query(expr: str) -> Query:
    tokens, problems = tokenize(expr)
    if problems:
        return Query([], [], problems)
    closing, problems = matching_parentheses(tokens)
    if problems:
        return Query([], [], problems)
    return _Reader(tokens, closing).read()


# --- checking a query against the exposed metrics ----------------------------------------


def _simple_alternatives(value: str) -> list[str] | None:
    """`4xx|5xx` -> the words; None for a real regex or a dashboard variable."""
    if re.fullmatch(r"\w*(\|\w*)*", value) is None:
        return None
    return [word for word in value.split("|") if word]


def _one_of(values: typing.Iterable[str]) -> Callable[[str], bool]:
    allowed = frozenset(values)
    return lambda value: value in allowed


def _kept_by(label_function: Callable[[str], str]) -> Callable[[str], bool]:
    """A value the metrics module keeps as it is (anything else becomes `other`)."""
    return lambda value: value != metrics.OTHER and label_function(value) == value


# Labels whose values come from a fixed set the code defines: a filter on a value the
# code never emits would match nothing.
LABEL_VALUES: dict[str, Callable[[str], bool]] = {
    "status_class": _one_of(metrics.status_class(status) for status in range(600)),
    "kind": _kept_by(metrics.rate_limit_label),
    "method": _kept_by(metrics.method_label),
    "credential_type": _kept_by(metrics.credential_type_label),
    "layer": _one_of(typing.get_args(observe.CacheLayer)),
    "result": _one_of(typing.get_args(observe.CacheResult)),
    "operation": _one_of(
        typing.get_args(observe.RedisOperation) + typing.get_args(observe.StoreOperation)
    ),
}


def query_problems(expr: str, exposed: Exposed, *, check_types: bool = True) -> list[str]:
    """What in `expr` the exposed metrics do not back. `check_types`: counters and
    histogram series must be read through rate() and gauges must not (off for the
    series lookups of template variables, which read no values)."""
    query = read_query(expr)
    problems = list(query.problems)
    for selector in query.selectors:
        problems += _selector_problems(selector, exposed, check_types)
    for grouping in query.groupings:
        for selector in query.selectors:
            if grouping.start < selector.position < grouping.end:
                problems += [
                    f"{grouping.keyword} ({label}): no label {label} on {selector.metric}"
                    for label in grouping.labels
                    if label not in _labels_of(selector.metric, exposed)
                ]
    return problems


def _labels_of(metric: str, exposed: Exposed) -> frozenset[str]:
    return exposed.labels.get(metric, frozenset()) | TARGET_LABELS


def _selector_problems(selector: Selector, exposed: Exposed, check_types: bool) -> list[str]:
    metric = selector.metric
    if metric not in exposed.labels:
        return [f"no metric named {metric}"]
    problems = _type_problems(selector, exposed.kinds[metric]) if check_types else []
    for matcher in selector.matchers:
        if matcher.label not in _labels_of(metric, exposed):
            problems.append(f"no label {matcher.label} on {metric}")
        problems += _value_problems(metric, matcher)
    return problems


def _type_problems(selector: Selector, kind: str) -> list[str]:
    in_rate = selector.function in RATE_FUNCTIONS
    if kind in ("counter", "histogram") and not in_rate:
        return [f"{selector.metric} is a {kind} series read without rate()/increase()"]
    if kind == "gauge" and in_rate:
        return [f"{selector.metric} is a gauge inside {selector.function}()"]
    return []


def _value_problems(metric: str, matcher: Matcher) -> list[str]:
    accepts = LABEL_VALUES.get(matcher.label)
    if accepts is None:
        return []
    if matcher.operator in ("=", "!="):
        values = [matcher.value] if matcher.value else []
    else:
        values = _simple_alternatives(matcher.value) or []
    return [
        f"{metric}: {matcher.label} is never {value!r}" for value in values if not accepts(value)
    ]


# --- checking the dashboard --------------------------------------------------------------

_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_LABEL_VALUES_QUERY = re.compile(r"label_values\((?P<selector>.+),\s*(?P<label>\w+)\)")


def load_dashboard() -> Json:
    loaded: Json = json.loads(DASHBOARD.read_text())
    return loaded


def graph_panels(dashboard: Json) -> list[Json]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def dashboard_problems(dashboard: Json, exposed: Exposed) -> list[str]:
    """Everything in the dashboard's queries the exposed metrics do not back."""
    problems = []
    for panel in graph_panels(dashboard):
        for target in panel["targets"]:
            where = f"panel {panel['title']!r} query {target['refId']}"
            problems += [f"{where}: {p}" for p in _target_problems(target, exposed)]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            problems += [
                f"variable {variable['name']}: {p}"
                for p in _variable_problems(variable["query"]["query"], exposed)
            ]
    return problems


def _target_problems(target: Json, exposed: Exposed) -> list[str]:
    expr = target["expr"]
    problems = query_problems(expr, exposed)
    query = read_query(expr)
    # A legend can only show labels the query keeps: the `by` labels once it aggregates.
    if query.by_labels():
        kept = query.by_labels()
    else:
        kept = {label for s in query.selectors for label in _labels_of(s.metric, exposed)}
    for label in _LEGEND_LABEL.findall(target.get("legendFormat", "")):
        if label not in kept:
            problems.append(f"legend shows {{{{{label}}}}}, which the query drops")
    return problems


def _variable_problems(query: str, exposed: Exposed) -> list[str]:
    found = _LABEL_VALUES_QUERY.fullmatch(query)
    if found is None:
        return [f"not a label_values() query: {query!r}"]
    # The same check as a query that groups the variable's series by its label.
    grouped = f"count by ({found['label']}) ({found['selector']})"
    return query_problems(grouped, exposed, check_types=False)


def metrics_used(dashboard: Json) -> dict[str, set[str]]:
    """Metric name -> titles of the panels that query it."""
    used: dict[str, set[str]] = {}
    for panel in graph_panels(dashboard):
        for target in panel["targets"]:
            for selector in read_query(target["expr"]).selectors:
                used.setdefault(selector.metric, set()).add(panel["title"])
    return used


def panels_by_row(dashboard: Json) -> dict[str, list[Json]]:
    """Grafana puts a panel in the row whose header is the last one above it."""
    ordered = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    rows: dict[str, list[Json]] = {}
    current: list[Json] | None = None
    for panel in ordered:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        elif current is not None:
            current.append(panel)
    return rows


# --- the dashboard's shape ---------------------------------------------------------------


def test_the_dashboard_parses_and_names_itself() -> None:
    dashboard = load_dashboard()
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"].strip()
    assert dashboard["schemaVersion"] >= 36  # rows, timeseries panels, datasource refs by uid
    assert dashboard["refresh"]
    assert dashboard["time"]["from"].startswith("now-")


def test_every_panel_has_a_unique_id_and_a_title() -> None:
    panels = load_dashboard()["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), sorted(ids)
    assert all(isinstance(panel_id, int) for panel_id in ids)
    assert [panel for panel in panels if not panel.get("title", "").strip()] == []


def test_every_query_goes_through_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    expected = {"type": "prometheus", "uid": DATASOURCE_UID}
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == expected for target in panel["targets"])
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == expected, variable["name"]


def test_panels_fit_the_grid_without_overlapping() -> None:
    panels = load_dashboard()["panels"]
    boxes = {}
    for panel in panels:
        grid = panel["gridPos"]
        x, y, width, height = grid["x"], grid["y"], grid["w"], grid["h"]
        assert min(width, height) > 0, panel["title"]
        assert min(x, y) >= 0, panel["title"]
        assert x + width <= GRID_COLUMNS, panel["title"]
        boxes[panel["title"]] = (x, y, x + width, y + height)
    overlapping = [
        (first, second)
        for first, a in boxes.items()
        for second, b in boxes.items()
        if first < second and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    ]
    assert overlapping == []
    assert len(boxes) == len(panels), "panel titles must be unique to be told apart"


# --- the queries against the real metrics ------------------------------------------------


def test_the_child_exposes_a_sample_of_every_family(
    single_process: Exposed, multiprocess: Exposed
) -> None:
    """Label names are read off samples: a family without one would go unchecked."""
    assert single_process.families_without_samples == frozenset()
    assert multiprocess.families_without_samples == frozenset()
    assert "authgate_proxy_upstream_seconds_bucket" in multiprocess.labels


def test_every_query_uses_metrics_and_labels_the_service_exposes(
    single_process: Exposed,
) -> None:
    assert dashboard_problems(load_dashboard(), single_process) == []


def test_only_process_metrics_are_missing_with_several_workers(
    single_process: Exposed, multiprocess: Exposed
) -> None:
    """prometheus-client's multiprocess mode leaves out the process_* metrics; the panels
    that use them must say so, and nothing else may be missing."""
    used = metrics_used(load_dashboard())
    missing = {metric for metric in used if metric not in multiprocess.labels}
    assert all(metric.startswith("process_") for metric in missing), missing
    descriptions = {p["title"]: p.get("description", "") for p in graph_panels(load_dashboard())}
    for metric in missing:
        for title in used[metric]:
            assert "multiprocess mode" in descriptions[title], title
    for name in set(used) - missing:
        assert multiprocess.labels[name] == single_process.labels[name], name


def test_every_authgate_metric_is_on_the_dashboard(single_process: Exposed) -> None:
    used = metrics_used(load_dashboard())
    families = {_family(name) for name in single_process.labels if name.startswith("authgate_")}
    shown = {_family(name) for name in used}
    assert sorted(families - shown) == []


def _family(sample: str) -> str:
    return re.sub(r"_(total|created|bucket|sum|count)$", "", sample)


@dataclass(frozen=True)
class Theme:
    """One thing issue 7 asks the dashboard to show: a panel in `row` querying all of
    `metrics`, grouping by `grouped_by`, and filtering with `matchers`."""

    row: str
    metrics: frozenset[str]
    grouped_by: frozenset[str] = frozenset()
    matchers: frozenset[tuple[str, str, str]] = frozenset()


THEMES = {
    "traffic": Theme(
        "Traffic", frozenset({"authgate_proxy_requests_total"}), frozenset({"status_class"})
    ),
    "proxy overhead vs upstream time": Theme(
        "Latency",
        frozenset(
            {"authgate_proxy_overhead_seconds_bucket", "authgate_proxy_upstream_seconds_bucket"}
        ),
    ),
    "errors by source": Theme(
        "Errors",
        frozenset({"authgate_proxy_requests_total"}),
        matchers=frozenset({("error", "=", ""), ("error", "!=", "")}),
    ),
    "refresh outcomes": Theme(
        "Credentials", frozenset({"authgate_token_refreshes_total"}), frozenset({"outcome"})
    ),
    "rate limiting": Theme(
        "Rate limiting", frozenset({"authgate_proxy_rate_limited_total"}), frozenset({"kind"})
    ),
    "cache hit ratio": Theme(
        "Credentials",
        frozenset({"authgate_credential_cache_lookups_total"}),
        frozenset({"layer"}),
        frozenset({("result", "=", "hit")}),
    ),
    "saturation": Theme(
        "Saturation",
        frozenset({"authgate_upstream_pool_connections", "authgate_upstream_pool_limit"}),
    ),
}


def shows(panel: Json, theme: Theme) -> bool:
    queries = [read_query(target["expr"]) for target in panel["targets"]]
    selectors = [s for q in queries for s in q.selectors]
    matchers = {(m.label, m.operator, m.value) for s in selectors for m in s.matchers}
    return (
        theme.metrics <= {s.metric for s in selectors}
        and theme.grouped_by <= {label for q in queries for label in q.by_labels()}
        and theme.matchers <= matchers
    )


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_each_theme_of_the_issue_has_a_panel(theme: str) -> None:
    wanted = THEMES[theme]
    row = panels_by_row(load_dashboard()).get(wanted.row, [])
    assert [panel["title"] for panel in row if shows(panel, wanted)] != []


def test_the_saturation_row_shows_in_flight_work_and_the_process() -> None:
    row = panels_by_row(load_dashboard())["Saturation"]
    used = {s.metric for p in row for t in p["targets"] for s in read_query(t["expr"]).selectors}
    assert {
        "authgate_proxy_requests_in_flight",
        "authgate_proxy_response_bytes_in_flight",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "authgate_store_errors_total",
        "authgate_redis_errors_total",
    } <= used


# --- the checker itself ------------------------------------------------------------------


Breakage = Callable[[Json], None]


def _targets(dashboard: Json, title: str) -> list[Json]:
    panel = next(p for p in graph_panels(dashboard) if p["title"] == title)
    targets: list[Json] = panel["targets"]
    return targets


def _rewrite_expr(title: str, pattern: str, replacement: str) -> Breakage:
    """Rewrite the queries of a panel with a regex (which must match one of them)."""

    def rewrite(dashboard: Json) -> None:
        rewritten = 0
        for target in _targets(dashboard, title):
            target["expr"], count = re.subn(pattern, replacement, target["expr"])
            rewritten += count
        assert rewritten, (title, pattern)

    return rewrite


def _replace_in_expr(title: str, old: str, new: str) -> Breakage:
    return _rewrite_expr(title, re.escape(old), new.replace("\\", "\\\\"))


def _set_legend(title: str, legend: str) -> Breakage:
    def set_legend(dashboard: Json) -> None:
        _targets(dashboard, title)[0]["legendFormat"] = legend

    return set_legend


def _replace_in_variable(name: str, old: str, new: str) -> Breakage:
    def replace(dashboard: Json) -> None:
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == name)
        assert old in variable["query"]["query"]
        variable["query"]["query"] = variable["query"]["query"].replace(old, new)

    return replace


LATENCY = "Proxy overhead vs upstream time (p50, p99)"
STATUS = "Requests per second by status class"
# Each: how to break a copy of the dashboard, and what the checker must then say.
BREAKAGES: dict[str, tuple[Breakage, str]] = {
    "renamed metric": (
        _replace_in_expr(LATENCY, "upstream_seconds_bucket", "upstream_secs_bucket"),
        "no metric named authgate_proxy_upstream_secs_bucket",
    ),
    "counter without _total": (
        _replace_in_expr("Retries by reason", "retries_total", "retries"),
        "no metric named authgate_proxy_retries",
    ),
    "histogram without _bucket": (
        _replace_in_expr(LATENCY, "overhead_seconds_bucket", "overhead_seconds"),
        "no metric named authgate_proxy_overhead_seconds",
    ),
    "renamed label in a selector": (
        _replace_in_expr(LATENCY, 'waited="false"', 'waiting="false"'),
        "no label waiting on authgate_proxy_overhead_seconds_bucket",
    ),
    "renamed label in by()": (
        _replace_in_expr(STATUS, "by (status_class)", "by (status)"),
        "by (status): no label status on authgate_proxy_requests_total",
    ),
    "a label value the code never emits": (
        _replace_in_expr("Rate-limited requests by kind", "_total{", '_total{kind="throttled", '),
        "kind is never 'throttled'",
    ),
    "a counter read without rate()": (
        _rewrite_expr(
            "Store reads",
            r"rate\((authgate_credential_store_reads_total\{[^}]*\})\[\$__rate_interval\]\)",
            r"\1",
        ),
        "authgate_credential_store_reads_total is a counter series read without rate()",
    ),
    "a gauge inside rate()": (
        _rewrite_expr(
            "Requests in flight",
            r"\((authgate_proxy_requests_in_flight\{[^}]*\})\)",
            r"(rate(\1[5m]))",
        ),
        "authgate_proxy_requests_in_flight is a gauge inside rate()",
    ),
    "unknown function": (
        _replace_in_expr("Store reads", "sum(", "summ("),
        "unknown function summ",
    ),
    "a legend label the query drops": (
        _set_legend(STATUS, "{{integration}}"),
        "legend shows {{integration}}, which the query drops",
    ),
    "renamed metric in a variable": (
        _replace_in_variable("job", "requests_in_flight", "requests_flying"),
        "variable job: no metric named authgate_proxy_requests_flying",
    ),
    "renamed label in a variable": (
        _replace_in_variable("integration", ", integration)", ", integration_key)"),
        "variable integration: by (integration_key): no label integration_key on "
        "authgate_proxy_requests_total",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_checker_reports_a_broken_dashboard(breakage: str, single_process: Exposed) -> None:
    break_it, expected = BREAKAGES[breakage]
    broken = copy.deepcopy(load_dashboard())
    break_it(broken)
    problems = dashboard_problems(broken, single_process)
    assert [problem for problem in problems if expected in problem] != [], problems


def test_the_tokenizer_reads_selectors_groupings_and_functions() -> None:
    query = read_query(
        "histogram_quantile(0.99, sum by (le, integration) "
        '(rate(x_bucket{a="1", b=~"2|3"}[$__rate_interval]))) / on (job) y'
    )
    assert query.problems == []
    assert [(s.metric, s.function) for s in query.selectors] == [
        ("x_bucket", "rate"),
        ("y", None),
    ]
    assert query.selectors[0].matchers == (Matcher("a", "=", "1"), Matcher("b", "=~", "2|3"))
    assert [(g.keyword, g.labels) for g in query.groupings] == [
        ("by", ("le", "integration")),
        ("on", ("job",)),
    ]


def test_every_query_reads_without_problems() -> None:
    """The tokenizer understands every query as written (an unreadable one would hide
    its metrics from the checks above)."""
    exprs = [t["expr"] for panel in graph_panels(load_dashboard()) for t in panel["targets"]]
    for expr in exprs:
        query = read_query(expr)
        assert query.problems == [], (expr, query.problems)
        assert query.selectors, expr
