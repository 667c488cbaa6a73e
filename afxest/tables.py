"""Tables for people: the rich tables the commands print on stderr (an estimate's candidates,
the installed models, an evaluation's summary) and the markdown tables of the evaluation
reports (report.md, comparison.md), with the cell formats they share.

Every function here turns results into text or a rich renderable; none computes or writes
anything. rich is imported inside the functions that build rich tables. The parameter labels
(``HS0 f Hz``) are :func:`afxest.catalogue.parameter_label`'s, which the figures use too.
"""

from __future__ import annotations

from typing import Any

from afxest.catalogue import parameter_label

# ---------------------------------------------------------------------------------------------
# cells and generic tables


def number(value: float | None, spec: str = ".4g") -> str:
    """One number as a cell: ``format(value, spec)``, ``-`` for None.

    Arguments:
        value: The number, or None where there is none.
        spec: A format spec; ``""`` prints the number as Python does (the paper's numbers).

    Example:
        >>> number(0.123456), number(12.3456, ".2f"), number(15.2, ""), number(None)
        ('0.1235', '12.35', '15.2', '-')
    """
    return "-" if value is None else format(value, spec)


def mean_std(value: tuple[float, float] | None, digits: int = 3) -> str:
    """A (mean, std) pair as ``mean ± std`` with ``digits`` decimals, ``-`` for None.

    Example:
        >>> mean_std((13.4567, 2.5)), mean_std((3.0, 0.5), 2), mean_std(None)
        ('13.457 ± 2.500', '3.00 ± 0.50', '-')
    """
    return "-" if value is None else f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def markdown(rows: list[list[str]]) -> str:
    """A markdown table of rows of strings, the first row its header.

    Example:
        >>> print(markdown([["", "Mel"], ["ours", "0.250 ± 0.012"]]), end="")
        |  | Mel |
        |---|---|
        | ours | 0.250 ± 0.012 |
    """
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines) + "\n"


def rich_table(rows: list[list[str]], title: str):
    """The rich table of the same rows (the header first), under ``title``."""
    from rich.table import Table

    table = Table(title=title)
    for name in rows[0]:
        table.add_column(name)
    for row in rows[1:]:
        table.add_row(*row)
    return table


# ---------------------------------------------------------------------------------------------
# an estimate's candidates (``afxest estimate``)

TRANSPOSE_ABOVE = 8  # more estimated parameters than this: one row per parameter
MATCH_COLUMNS = {"si_sdr": "SI-SDR dB", "log_mel": "log-mel"}  # each candidate's match to the wet
MATCH_FORMATS = {"si_sdr": ".2f", "log_mel": ".4g"}
def _processors(preset: dict[str, Any]) -> list[dict[str, Any]]:
    """A preset document's processors in order: its source (if any), then its effects."""
    return ([preset["source"]] if preset["source"] else []) + preset["effects"]


def _duration(ms: float) -> str:
    """A time constant in ms, or in s from a second: ``120 ms``, ``1.85 s``."""
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def _origin(candidate: dict[str, Any]) -> str:
    """Where a candidate came from: a posterior draw, or the search (from which proposal), and
    what the correction stage (afxest/correct.py) refitted of the task's chain (its
    ``task_effects``: the compressor's time constants) and added after it."""
    proposal = candidate.get("refinement", {}).get("proposal")
    origin = "draw" if proposal is None else f"search ({proposal})"
    record = candidate.get("correction")
    if record is None:
        return origin
    effects = candidate["preset"]["effects"]
    added = effects[record["effects_from"] :]
    peaks = [e["gain_db"] for e in added if e["type"] == "peak"]
    parts = [f"{effects[int(i)]['type']} refitted (attack {_duration(effects[int(i)]['attack_ms'])}, release "
             f"{_duration(effects[int(i)]['release_ms'])})" for i in record.get("task_effects", {})]
    parts += [f"EQ {len(peaks)} bands {min(peaks):+.1f}..{max(peaks):+.1f} dB"] if peaks else []
    parts += [f"FIR EQ {len(e['impulse_response'])} taps" for e in added if e["type"] == "convolution"]
    parts += [f"limiter {e['threshold_db']:g} dB" for e in added if e["type"] == "limiter"]
    return f"{origin} + correction: {', '.join(parts)}"


def _title(document: dict[str, Any]):
    """The candidate table's title: the wet file, the model, the ranking and the dry's baseline."""
    from rich.text import Text

    candidates = document["candidates"]
    title = Text(
        f"{document['wet']}: {len(candidates)} candidate{'s' * (len(candidates) > 1)} from model "
        f"{document['model']['name']} ({document['task']}, {document.get('analysis', {}).get('estimator', '?')}), "
        f"ranked by {document['ranked_by'] or 'nothing (one point estimate)'}"
    )
    baseline = document.get("baseline")
    if baseline:
        title.append(
            f"\nthe dry itself (baseline): loss {number(baseline.get('loss'))}, SI-SDR {number(baseline.get('si_sdr'), '.2f')} dB, "
            f"log-mel {number(baseline.get('log_mel'))}"
        )
    return title


def candidates_table(document: dict[str, Any], limit: int = 20):
    """A rich table of an estimate document's candidates: rank, loss (and before refinement),
    the match to the wet, log-density, and each estimated parameter in physical units (headers:
    processor type and index, parameter). With more than :data:`TRANSPOSE_ABOVE` parameters
    (``master``: 21) the table is transposed, one column per candidate (at most 10), so that
    it stays readable in a terminal.

    Arguments:
        document: An ``afxest-estimate`` document (:func:`afxest.estimate.estimate_file`).
        limit: The most candidates shown; a caption counts the others.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    candidates = document["candidates"]
    if not candidates:
        return Text(f"{document['wet']}: no candidates")
    procs = _processors(candidates[0]["preset"])
    # the estimated parameters: those that vary in the summary (fixed ones are left out)
    estimated = set(document.get("summary", {}))
    columns = [(i, k) for i, proc in enumerate(procs) for k in proc
               if k != "type" and (not estimated or f"{i}.{proc['type']}.{k}" in estimated)]
    refined = any("refinement" in c for c in candidates)
    table = Table(title=_title(document), title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 0, 0, 1))
    intervals = _intervals_by_column(document, procs, columns)
    if len(columns) > TRANSPOSE_ABOVE:
        table = _transposed(table, candidates[: min(limit, 10)], len(candidates), procs, columns, refined, intervals,
                            _interval_label(document) if intervals else "")
        return _with_undetermined(table, document)
    table.add_column("rank", justify="right")
    if refined:
        table.add_column("from", justify="left")
    table.add_column("loss", justify="right")
    if refined:
        table.add_column("before", justify="right")
    matched = [k for k in MATCH_COLUMNS if any(c.get(k) is not None for c in candidates)]
    for k in matched:
        table.add_column(MATCH_COLUMNS[k], justify="right")
    table.add_column("log p", justify="right")
    for i, k in columns:
        table.add_column(Text(parameter_label(procs[i]["type"], i, k, "\n")), justify="right")
    for c in candidates[:limit]:
        values = _processors(c["preset"])
        row = [str(c["rank"])]
        if refined:
            row.append(_origin(c))
        row.append(number(c["loss"]))
        if refined:
            row.append(number(c.get("refinement", {}).get("loss_before")))
        row += [number(c.get(k), MATCH_FORMATS[k]) for k in matched]
        row.append(number(c["log_prob"], ".2f"))
        row += [number(values[i][k]) for i, k in columns]
        table.add_row(*(Text(v) for v in row))
    if intervals:
        lead = 3 + refined * 2 + len(matched)  # rank, (from), loss, (before), matches, log p
        table.add_row(_interval_label(document), *([""] * (lead - 1)), *(Text(intervals.get(c, "")) for c in columns))
    if len(candidates) > limit:
        table.caption = f"... and {len(candidates) - limit} more in the estimate file"
    return _with_undetermined(table, document)


def _interval_label(document: dict[str, Any]) -> str:
    """The label of the interval row or column: its level, and whether the model is calibrated."""
    found = document["intervals"]
    return f"{round(100 * found['credible'])} % interval" + ("" if found["calibrated"] else " (uncalibrated)")


def _intervals_by_column(document: dict[str, Any], procs: list[dict[str, Any]],
                         columns: list[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """Each column's interval as ``low..high`` (``!`` after it where undetermined); empty
    without intervals (a point-estimating model, or an older document)."""
    found = (document.get("intervals") or {}).get("parameters")
    if not found:
        return {}
    out = {}
    for i, k in columns:
        entry = found.get(f"{i}.{procs[i]['type']}.{k}")
        if entry is not None:
            out[(i, k)] = f"{number(entry['low'])}..{number(entry['high'])}" + (" !" if entry["undetermined"] else "")
    return out


def _with_undetermined(table, document: dict[str, Any]):
    """The table with a caption giving the intervals of what the wet determines where those are
    not the columns' parameters (``eq``: the shelves' summed gain, shared cutoff and Q), and
    naming the parameters the wet leaves undetermined."""
    found = document.get("intervals") or {}
    quantities = found.get("quantities")
    if quantities:
        shown = "; ".join(f"{_quantity_label(n)} {number(e['low'])}..{number(e['high'])}"
                          + (" !" if e["undetermined"] else "") for n, e in quantities.items())
        note = (f"{_interval_label(document)} of what the wet determines (gains summed over the processors, "
                f"the rest their |gain|-weighted means): {shown}")
        table.caption = note if not table.caption else f"{table.caption}\n{note}"
    names = found.get("undetermined")
    if names:
        share = percent(found["undetermined_above"])
        note = (f"! undetermined by the wet (interval wider than {share} of the range): "
                + ", ".join(_quantity_label(n) if quantities else _short_name(n) for n in names))
        table.caption = note if not table.caption else f"{table.caption}\n{note}"
    return table


def _quantity_label(name: str) -> str:
    """A quantity of several processors together (``<index>.<type>.<parameter>`` of the truth's
    one processor) as a label: the processors' short name without an index, the parameter's
    short name and unit, e.g. ``HS g dB``."""
    _index, kind, param = name.split(".", 2)
    return parameter_label(kind, None, param)


def _short_name(name: str) -> str:
    """``<index>.<type>.<parameter>`` as a parameter label (:func:`afxest.catalogue.parameter_label`)."""
    index, kind, param = name.split(".", 2)
    return parameter_label(kind, int(index), param, " ")


def _transposed(table, shown: list[dict[str, Any]], total: int, procs: list[dict[str, Any]],
                columns: list[tuple[int, str]], refined: bool, intervals: dict[tuple[int, str], str], label: str):
    """:func:`candidates_table` with one row per value and one column per candidate (``procs``:
    the first candidate's processors, for the labels), and a last column of the intervals."""
    from rich.text import Text

    table.add_column("rank", justify="left")
    for c in shown:
        table.add_column(str(c["rank"]), justify="right")
    if intervals:
        table.add_column(label, justify="right")
    if refined:
        table.add_row("from", *(_origin(c) for c in shown))
    table.add_row("loss", *(number(c["loss"]) for c in shown))
    if refined:
        table.add_row("before", *(number(c.get("refinement", {}).get("loss_before")) for c in shown))
    for k, title in MATCH_COLUMNS.items():
        if any(c.get(k) is not None for c in shown):
            table.add_row(title, *(number(c.get(k), MATCH_FORMATS[k]) for c in shown))
    table.add_row("log p", *(number(c["log_prob"], ".2f") for c in shown))
    for i, k in columns:
        table.add_row(Text(parameter_label(procs[i]["type"], i, k)),
                      *(Text(number(_processors(c["preset"])[i][k])) for c in shown),
                      *([Text(intervals.get((i, k), ""))] if intervals else []))
    if total > len(shown):
        table.caption = f"... and {total - len(shown)} more in the estimate file"
    return table


# ---------------------------------------------------------------------------------------------
# the installed models (``afxest models``)


def models_table(rows: list[dict[str, Any]]):
    """A rich table of :func:`afxest.store.list_models` rows (name, origin, task, estimator,
    size, step and the validation figures stored in the checkpoint)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(title="afxest models", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    numeric = ("size", "step", "val_audio", "val_entropy_bits")
    for name in ("name", "origin", "task", "estimator", *numeric):
        table.add_column(name, justify="right" if name in numeric else "left")
    for row in rows:
        size = f"{row['size_bytes'] / 1e6:.1f} MB"
        if "error" in row:
            table.add_row(Text(row["name"]), row["origin"], Text("unreadable", style="red"), "", size, "", "", "")
            continue
        metrics = row["metrics"]
        figures = [number(metrics.get(key), ".4f") for key in ("val_audio", "val_entropy_bits")]
        estimator = row["estimator"] + (f" (T={row['flows']})" if row["estimator"] == "posterior" else "")
        table.add_row(Text(row["name"]), row["origin"], row["task"], estimator, size, number(row["step"], ""), *figures)
    return table


# ---------------------------------------------------------------------------------------------
# the evaluation reports (``afxest evaluate``: report.md, comparison.md and the summary)

METRIC_TITLES = {"sot": "SOT", "mel": "Mel", "mrstft": "MR-STFT", "si_sdr": "SI-SDR"}
# each estimator kind: its row in the main table, beside the paper's (Tables 1-3), and its
# description in the comparison's Estimator column
KIND_LABELS = {
    "posterior": ("Infer.", "posterior"),
    "deterministic": ("Deter.", "deterministic (audio loss)"),
    "param": ("Param.", "parameter loss"),
    "bins": ("Param. bins", "parameter loss on bins (cross-entropy)"),
}
PROXY_TITLES = {"pedalboard": "pedalboard (the real effect)", "dsp": "dsp proxy (afxest's compressor)",
                "neural": "neural proxy (TCN)"}
# the paper's numbers (DAFx 2025, Tables 1-3), printed beside ours
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "eq": {
        "Deter.": {"mel": 0.235, "mrstft": 0.412, "si_sdr": 14.8},
        "Infer. T=1": {"entropy": -1.51, "mel": 0.286, "mrstft": 0.477, "si_sdr": 13.5},
        "Input": {"mel": 2.154, "mrstft": 4.302, "si_sdr": 3.0},
    },
    "fm": {
        "Deter.": {"sot": 0.39, "mel": 0.063, "si_sdr": 32.52},
        "Infer. T=1": {"entropy": -2.43, "sot": 2.12, "mel": 0.386, "si_sdr": 15.20},
        "Rand.": {"sot": 51.6, "mel": 4.686, "si_sdr": 2.13},
    },
}
PAPER_BEST_OF_SI_SDR = {"eq": {1: 13.5, 2: 15.3, 3: 16.2, 4: 16.8, 5: 17.3, 10: 18.7}}
PAPER_UNIFORM10_SI_SDR = {"eq": 11.8}


def _titles(metrics: list[str]) -> list[str]:
    """The column titles of ``metrics`` (``Mel`` for ``mel``)."""
    return [METRIC_TITLES[m] for m in metrics]


def main_table(result) -> list[list[str]]:
    """Rows (header first) of the main table (DAFx 2025, Table 1/3) of an
    :class:`afxest.evaluate.Evaluation`: ours, the baselines and the paper's."""
    label = KIND_LABELS.get(result.kind, (result.kind, result.kind))[0]
    header = ["", "Entropy (bits/dim)", *_titles(result.metrics)]
    rows = [header, [f"{label} (ours)", mean_std(result.entropy), *(mean_std(result.expectation[m]) for m in result.metrics)]]
    if result.default_estimate:
        rows.append([f"Default estimate, --effort {result.effort} (ours)", "-",
                     *(mean_std(result.default_estimate[m]) for m in result.metrics)])
    if result.input_baseline is not None:
        rows.append(["Input (ours)", "-", *(mean_std(result.input_baseline[m]) for m in result.metrics)])
    rows.append(["Uniform, 1 (ours)", "-", *(mean_std(result.uniform_mean[m]) for m in result.metrics)])
    for name, values in PAPER.get(result.task, {}).items():
        rows.append([f"{name} (paper)", number(values.get("entropy"), ""), *(number(values.get(m), "") for m in result.metrics)])
    return rows


def _best_of_rows(result) -> list[list[str]]:
    """Rows of the best-of-N table (DAFx 2025, Table 2): ours up to the candidates drawn, the
    paper's SI-SDR always, and the uniform baseline."""
    paper_best = PAPER_BEST_OF_SI_SDR.get(result.task, {})
    rows = [["", *_titles(result.metrics), "SI-SDR (paper)"]]
    for k in result.best_of_rows:
        values = result.best_of.get(k, {})
        rows.append([f"Best of {k}", *(mean_std(values.get(m)) for m in result.metrics), number(paper_best.get(k), "")])
    rows.append([f"Uniform, best of {result.uniform_candidates}", *(mean_std(result.uniform_best10[m]) for m in result.metrics),
                 number(PAPER_UNIFORM10_SI_SDR.get(result.task), "")])
    return rows


def _refined_markdown(result) -> str:
    """The ``--refine`` section: every candidate after inference-time optimisation."""
    if not result.refine_steps:
        return ""
    rows = [["", *_titles(result.metrics)], ["Expectation", *(mean_std(result.refined_expectation[m]) for m in result.metrics)]]
    for k, values in sorted(result.refined_best_of.items()):
        rows.append([f"Best of {k}", *(mean_std(values[m]) for m in result.metrics)])
    return (
        f"\n## After --refine {result.refine_steps}\n\nEvery candidate improved by {result.refine_steps} steps "
        "of gradient descent on the training loss through the differentiable processors, the dry known "
        "(inference-time optimisation, as `afxest estimate --refine`), then rendered with pedalboard.\n\n"
    ) + markdown(rows)


def report_markdown(result, loaded=None) -> str:
    """report.md of an :class:`afxest.evaluate.Evaluation`: the expectation table, best of N,
    the refined and proxy renders, the parameters and the figures, beside the paper's numbers.

    Arguments:
        result: What :func:`afxest.evaluate.evaluate` measured.
        loaded: The evaluated :class:`afxest.store.LoadedModel` (its name, path and step head
            the report), or None.
    """
    model = "" if loaded is None else f"Model: `{loaded.name}` ({loaded.path}), step {loaded.step}.\n"
    if getattr(loaded, "calibration", None) is not None:
        t = loaded.calibration.temperature
        model += (f"Calibrated (docs/evaluate.md): its calibration draws come from the base Gaussian at its fitted "
                  f"temperatures (T = {min(t):.2g} to {max(t):.2g}, fitted on {loaded.calibration.fitted.get('items', '?')} "
                  "validation items); its candidates, as `afxest estimate`'s, are the untempered model's.\n")
    return "".join([
        f"# Evaluation: {result.task} ({result.kind})\n\n",
        model,
        f"{result.items} test items ({result.source}), {result.samples} candidate(s) per item, "
        "rendered with pedalboard (or the synth); mean ± std over items.\n\n",
        "## Expectation (Table 1/3, Eq. 18)\n\n",
        markdown(main_table(result)),
        "\n## Best of N (Table 2)\n\n",
        markdown(_best_of_rows(result)),
        _refined_markdown(result),
        proxies_markdown(result),
        "\nLower is better for every metric except SI-SDR (dB). Per-candidate values: `results.csv`.\n",
        parameters_markdown(result),
        calibration_markdown(result),
        figures_markdown(result),
    ])


def proxies_markdown(result) -> str:
    """The same candidates rendered through each compressor proxy instead of pedalboard."""
    if not result.proxy_expectation:
        return ""
    best = f"best of {result.samples}" if result.samples > 1 else "the estimate"
    text = [
        "\n## Rendered through the proxies (ICASSP 2024)\n\n",
        "The same candidates rendered by afxest's differentiable processors with each compressor proxy, "
        f"scored against the wet: expectation and {best}; the last column is each proxy render's SI-SDR "
        "against pedalboard's render of the same preset (higher: closer to the real effect).\n\n",
    ]
    header = ["Rendered by", *_titles(result.metrics), f"SI-SDR, {best}", "SI-SDR vs pedalboard"]
    rows = [header, [PROXY_TITLES["pedalboard"], *(mean_std(result.expectation[m]) for m in result.metrics),
                     mean_std(result.best_of[result.samples]["si_sdr"]), "-"]]
    for p, values in result.proxy_expectation.items():
        rows.append([PROXY_TITLES.get(p, p), *(mean_std(values[m]) for m in result.metrics),
                     mean_std(result.proxy_best[p]["si_sdr"]), mean_std(result.proxy_agreement[p])])
    return "".join(text) + markdown(rows)


def comparison_rows(results: list[tuple[str, Any]]) -> list[list[str]]:
    """Rows (header first) of models evaluated on the same items side by side (``afxest evaluate
    --also``): the pedalboard renders' expectation and best of N, the proxies' SI-SDR,
    ``--refine``, the posteriors' mean calibration, then the first result's Input and Uniform
    baselines.

    Arguments:
        results: The (model name, :class:`afxest.evaluate.Evaluation`) pairs, the first the
            reference of the baselines and columns.
    """
    first = results[0][1]
    metrics = first.metrics
    proxies = list(first.proxy_expectation)
    refine = first.refine_steps
    top = max(r.samples for _, r in results)
    header = ["Model", "Estimator", "Entropy (bits/dim)", *_titles(metrics),
              f"Mel, best of {top}", f"SI-SDR, best of {top}",
              *(f"SI-SDR via {p} proxy" for p in proxies)]
    if refine:
        header += [f"SI-SDR, --refine {refine}", f"SI-SDR, best of {top}, --refine {refine}"]
    if first.effort:
        header += [f"SI-SDR, default estimate (--effort {first.effort})"]
    calibrated = any(getattr(r, "calibration", None) is not None for _, r in results)
    if calibrated:
        header += ["Truth in 50 % / 90 % of draws (mean)", "Truth outside all draws (mean)"]
    rows = [header]
    for name, r in results:
        best = r.best_of[r.samples]
        row = [f"`{name}`", KIND_LABELS.get(r.kind, (r.kind, r.kind))[1], mean_std(r.entropy),
               *(mean_std(r.expectation[m]) for m in metrics),
               mean_std(best.get("mel")), mean_std(best.get("si_sdr")),
               *(mean_std(r.proxy_expectation.get(p, {}).get("si_sdr")) for p in proxies)]
        if refine:
            refined_best = r.refined_best_of[r.samples]
            row += [mean_std(r.refined_expectation.get("si_sdr")), mean_std(refined_best.get("si_sdr"))]
        if first.effort:
            row += [mean_std(r.default_estimate.get("si_sdr"))]
        if calibrated:
            c = getattr(r, "calibration", None)
            row += ["-", "-"] if c is None else [f"{percent(c.coverage[0.5].mean())} / {percent(c.coverage[0.9].mean())}",
                                                 percent(c.outside.mean())]
        rows.append(row)
    filler = ["-"] * (len(header) - 3 - len(metrics))
    if first.input_baseline is not None:
        rows.append(["Input (dry)", "-", "-", *(mean_std(first.input_baseline[m]) for m in metrics), *filler])
    rows.append(["Uniform", "-", "-", *(mean_std(first.uniform_mean[m]) for m in metrics),
                 mean_std(first.uniform_best10.get("mel")), mean_std(first.uniform_best10.get("si_sdr")), *filler[2:]])
    return rows


def comparison_markdown(results: list[tuple[str, Any]]) -> str:
    """comparison.md: :func:`comparison_rows`, then the parameter error and the posterior
    spread per parameter of every model."""
    first = results[0][1]
    text = [
        f"# Comparison: {first.task}\n\n",
        f"{first.items} test items ({first.source}), the same for every model; rendered with pedalboard "
        f"unless the column says otherwise; mean ± std over items. Uniform's best column is the best of "
        f"{first.uniform_candidates} uniform draws.\n\n",
        markdown(comparison_rows(results)),
    ]
    with_error = [(name, r) for name, r in results if r.param_error]
    spread = [(name, r) for name, r in results if r.param_spread]
    if with_error or spread:
        units = with_error[0][1].param_units if with_error else {}
        head = ["Parameter", "Unit", *(f"`{n}` error" for n, _ in with_error),
                *(f"`{n}` {what}" for n, _ in spread for what in ("std (normalised)", "entropy (bits)"))]
        prow = [head]
        for p in (with_error or spread)[0][1].param_error or spread[0][1].param_spread:
            prow.append([p, units.get(p, ""), *(mean_std(r.param_error[p]) for _, r in with_error),
                         *(v for _, r in spread for v in (mean_std(r.param_spread[p]), mean_std(r.param_entropy[p], 2)))])
        text += [
            "\n## Parameters\n\nError: |estimate - truth| in physical units (mean over an item's candidates); "
            "std and entropy: the spread of a posterior's candidates in normalised units and its marginal's "
            "entropy (near 0.29 and 0 bits where the audio does not pin the setting down).\n\n",
            markdown(prow),
        ]
    return "".join(text)


def parameters_markdown(result) -> str:
    """The per-parameter table: error in physical units (truth = model space) and the
    posterior's spread (normalised units)."""
    if not result.param_error and not result.param_spread:
        return ""
    text = ["\n## Parameters\n\n"]
    header = ["Parameter"]
    if result.param_error:
        header += ["Unit", "Abs. error (mean over candidates)"]
        text.append("Error: |candidate - truth| in physical units, averaged over an item's candidates. ")
    if result.param_spread:
        header += ["Posterior std (normalised)", "Marginal entropy (bits)"]
        text.append("Spread: the std of an item's candidates in normalised [0, 1] units, and the entropy of "
                    f"the posterior's marginal ({result.entropy_samples} draws, histogram estimate); small where the "
                    "audio pins the setting down, near 0.29 and 0 bits (uniform) where it does not.")
    rows = [header]
    for name in (result.param_error or result.param_spread):
        row = [name]
        if result.param_error:
            row += [result.param_units.get(name, ""), mean_std(result.param_error[name])]
        if result.param_spread:
            row += [mean_std(result.param_spread[name]), mean_std(result.param_entropy[name], 2)]
        rows.append(row)
    return "".join(text) + "\n\n" + markdown(rows)


def percent(share: float) -> str:
    """A share as a whole percentage.

    Example:
        >>> percent(0.3149), percent(0.9)
        ('31 %', '90 %')
    """
    return f"{100 * share:.0f} %"


def calibration_rows(result) -> list[list[str]]:
    """Rows (header first) of a posterior's calibration (:class:`afxest.calibration.Calibration`):
    per quantity the coverage of the central 50 % and 90 % intervals of the draws, the share of
    truths outside all of them and the verdict against the bands; then the mean and what a
    calibrated posterior gives."""
    c = result.calibration
    levels = sorted(c.coverage)
    header = ["Quantity", *(f"{round(100 * a)} % interval holds the truth" for a in levels),
              f"Truth outside all {c.draws} draws", "Verdict"]
    rows = [header]
    for j, name in enumerate(c.names):
        rows.append([name, *(percent(c.coverage[a][j]) for a in levels), percent(c.outside[j]), c.verdict(j)])
    rows.append(["Mean over quantities", *(percent(c.coverage[a].mean()) for a in levels), percent(c.outside.mean()), ""])
    rows.append(["Calibrated posterior", *(percent(c.nominal[a]) for a in levels), percent(c.outside_nominal), ""])
    return rows


def calibration_markdown(result) -> str:
    """The report's calibration section (posterior models): what is measured and
    :func:`calibration_rows`, with how each quantity is formed where it is not a model
    parameter (eq)."""
    c = getattr(result, "calibration", None)
    if c is None:
        return ""
    from afxest.calibration import BANDS, OUTSIDE_MAX

    bands = ", ".join(f"{round(100 * a)} %: {percent(lo)}-{percent(hi)}" for a, (lo, hi) in sorted(BANDS.items()))
    text = [
        "\n## Calibration\n\n",
        f"For each of the {c.items} test items, whose truth is drawn from the task's own prior, {c.draws} more "
        "draws of the posterior; per quantity, how often the truth lies in the central 50 % and 90 % of the "
        "draws, and outside all of them (simulation-based calibration, Talts et al. 2018; expected coverage, "
        "Hermans et al. 2022). A calibrated posterior gives the last row; less coverage is over-confident "
        f"(the draws too narrow), more is under-confident. Verdict against the bands {bands} "
        f"(issue 22; the share outside all draws should stay at most {percent(OUTSIDE_MAX)}). "
        f"With {c.items} items, one coverage figure has a standard error of about "
        f"{percent((0.09 / c.items) ** 0.5)} at 90 %. Ranks per item: `calibration.csv`.\n\n",
    ]
    notes = [(name, note) for name, note in zip(c.names, c.notes) if note]
    if notes:
        text.append("The model estimates more processors than made the truth, so single model parameters have no "
                    "truth; what the wet determines is calibrated instead: "
                    + "; ".join(f"`{name}`: the {note}" for name, note in notes)
                    + ". A cutoff or Q of a shelf with no gain is not determined by any audio.\n\n")
    if c.interval_levels is not None:
        at = c.interval_levels[max(c.interval_levels)]
        text.append(f"The model is calibrated: the coverage columns are those of the intervals it reports, each "
                    f"parameter's central interval of the draws at the level fitted on validation "
                    f"({round(100 * max(c.interval_levels))} %: {percent(at.min())} to {percent(at.max())} of the draws); "
                    "the share outside all draws and the figures are the draws' own.\n\n")
    text.append(markdown(calibration_rows(result)))
    for figure in getattr(result, "calibration_figures", []):
        text.append(f"\n{figure.caption}\n\n![{figure.key}]({figure.file})\n")
    return "".join(text)


def figures_markdown(result) -> str:
    """The report's figure section: each PNG written (relative link) and what is missing."""
    from afxest.figures import FILES

    text = ["\n## Figures (DAFx 2025, Figs. 4-8)\n\n"]
    for figure in result.figures:
        alt = f"Fig. {figure.key[3:]}" if figure.key in FILES else figure.key
        text.append(f"{figure.caption}\n\n![{alt}]({figure.file})\n\n")
    if result.figures_note:
        text.append(result.figures_note + "\n")
    elif not result.figures:
        text.append("No figure applies to this model.\n")
    return "".join(text)
