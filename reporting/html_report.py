"""The audit report: one self-contained HTML page per audit (`starter.py report`).

Built from the competition repo's files only (what the audit wrote): the verdict and its
reasons (`generation_audits.json`), a histogram of generation times with the median limit,
per-pod stats and why each pod ended (`pod_stats.json`), and one row per audited prompt with the
submitted and the regenerated preview side by side, time, distance and attempts
(`submitted.json`, `generated.json`). Previews are embedded as data URIs, so the page opens
anywhere, offline, on a phone. It owns the page's layout; it does not own reading git (the
`CompetitionSource`) or the verdict rules (`workflows/policy/verdict.py`).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from pydantic import BaseModel, ConfigDict

from competition.repo import CompetitionSource
from competition.rounds import load_round_files
from models.audit import AuditPolicy
from models.competition import (
    CompetitionPaths,
    GenerationAudit,
    GenerationEntry,
    PodStats,
    PodStatsFile,
    parse_competition_file,
)
from workflows.policy import verdict

logger = logging.getLogger(__name__)

IMAGE_TIMEOUT_SECONDS = 10.0
HISTOGRAM_BINS = 20
MAX_IMAGE_BYTES = 8 * 1024 * 1024

ImageLoader = Callable[[str], bytes | None]


class PromptRow(BaseModel):
    """One audited prompt of the report."""

    model_config = ConfigDict(frozen=True)

    stem: str
    critical: bool
    submitted_png: str | None
    generated: GenerationEntry | None
    mismatch: str | None = None  # why it counts as a mismatch (verdict.Mismatch), None: a match
    pods: list[str] = []  # short ids of the pods assigned it (known to the audit, not the repo)


class ReportData(BaseModel):
    """Everything the page shows, read from the repo (no I/O after this point but images)."""

    model_config = ConfigDict(frozen=True)

    round: int
    hotkey: str
    audit: GenerationAudit | None
    policy: AuditPolicy
    prompts: list[PromptRow]
    pods: dict[str, PodStats]


def load_report_data(
    source: CompetitionSource,
    round_number: int,
    hotkey: str,
    policy: AuditPolicy,
    pods_by_stem: Mapping[str, list[str]] | None = None,
) -> ReportData:
    """Read what the audit of `hotkey` in `round_number` wrote.

    Raises:
        UnknownRoundError, UnknownHotkeyError, CompetitionFileError: as `load_round_files`.
    """
    files = load_round_files(source, round_number, hotkey)
    audits_path = CompetitionPaths.generation_audits(round_number)
    audits_text = source.read_text(audits_path)
    audit: GenerationAudit | None = None
    if audits_text is not None:
        entry = json.loads(audits_text).get(hotkey)
        if entry is not None:
            audit = GenerationAudit.model_validate(entry)
    stats_path = CompetitionPaths.pod_stats(round_number, hotkey)
    stats_text = source.read_text(stats_path)
    pods = (
        parse_competition_file(PodStatsFile, stats_path, stats_text).root
        if stats_text is not None
        else {}
    )
    critical = set(files.critical_prompts)
    rows = []
    for stem in files.audited_stems():
        generated = files.generated.get(stem)
        rows.append(
            PromptRow(
                stem=stem,
                critical=stem in critical,
                submitted_png=files.submitted[stem].png,
                generated=generated,
                mismatch=_value(verdict.classify(generated, policy)),
                pods=list((pods_by_stem or {}).get(stem, [])),
            )
        )
    return ReportData(
        round=round_number, hotkey=hotkey, audit=audit, policy=policy, prompts=rows, pods=pods
    )


def _value(mismatch: verdict.Mismatch | None) -> str | None:
    return None if mismatch is None else mismatch.value.replace("_", " ")


class ImageFetcher:
    """Loads previews for embedding: `file://` artifacts and http(s) URLs.

    Owns one HTTP client; a host that failed to connect once is not asked again (a report of an
    offline prompt server takes seconds, not a timeout per prompt). Returns None for a preview
    it cannot load; the page then links the URL instead of embedding it.
    """

    def __init__(self, timeout: float = IMAGE_TIMEOUT_SECONDS) -> None:
        """Open the HTTP client (close with `close` or `with`)."""
        self._http = httpx.Client(timeout=timeout, follow_redirects=True)
        self._dead_hosts: set[str] = set()

    def __call__(self, url: str) -> bytes | None:
        """The preview's bytes, or None."""
        parsed = urlparse(url)
        try:
            if parsed.scheme == "file":
                return Path(unquote(parsed.path)).read_bytes()[:MAX_IMAGE_BYTES]
            if parsed.scheme in {"http", "https"} and parsed.netloc not in self._dead_hosts:
                response = self._http.get(url)
                response.raise_for_status()
                return response.content[:MAX_IMAGE_BYTES]
        except httpx.TransportError as e:
            logger.warning("previews from %s unavailable (%s); linking them", parsed.netloc, e)
            self._dead_hosts.add(parsed.netloc)
        except (OSError, httpx.HTTPError) as e:
            logger.warning("preview %s unavailable: %s", url, e)
        return None

    def close(self) -> None:
        """Close the HTTP client."""
        self._http.close()

    def __enter__(self) -> ImageFetcher:
        """The fetcher itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the HTTP client."""
        self.close()


def render_html(data: ReportData, images: ImageLoader) -> str:
    """The whole page; `images` loads each preview to embed (e.g. an `ImageFetcher`)."""
    title = f"Audit round {data.round} · {data.hotkey}"
    body = "\n".join(
        [
            f"<h1>{_e(title)}</h1>",
            _verdict_section(data),
            _histogram_section(data),
            _pods_section(data),
            _prompts_section(data, images),
        ]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style></head>
<body>{body}</body></html>
"""


def _verdict_section(data: ReportData) -> str:
    p = data.policy
    thresholds = (
        f"GENERATION_MEDIAN_LIMIT={p.median_limit_seconds:g}s, "
        f"GENERATION_MEDIAN_TRIM_COUNT={p.trim_count}, "
        f"ACCEPTABLE_DISTANCE={p.acceptable_distance:g}, "
        f"GENERATION_TIMEOUT={p.generation_timeout_seconds:g}s, "
        f"MAX_MISMATCHED_PROMPTS={p.max_mismatched_prompts}, "
        f"MAX_MISMATCHED_CRITICAL_PROMPTS={p.max_mismatched_critical_prompts}"
    )
    audit = data.audit
    if audit is None:
        return (
            '<section id="verdict" class="verdict pending"><h2>Verdict: none yet</h2>'
            "<p>generation_audits.json has no entry for this miner (the audit runs or "
            f"failed).</p><p class=small>{_e(thresholds)}</p></section>"
        )
    reasons = [r for r in audit.reason.split("; ") if r]
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons) or "<li>all checks passed</li>"
    median = f"{audit.generation_time:.2f} s" if audit.generation_time is not None else "N/A"
    return f"""<section id="verdict" class="verdict {audit.outcome.value}">
<h2>Verdict: <span class="outcome">{audit.outcome.value.upper()}</span></h2>
<ul class="reasons">{items}</ul>
<dl>
<dt>checked prompts</dt><dd>{audit.checked_prompts}</dd>
<dt>mismatches</dt><dd>{audit.failed_prompts}</dd>
<dt>critical mismatches</dt><dd>{audit.failed_critical}</dd>
<dt>trimmed median</dt><dd>{median}</dd>
</dl>
<p class="small">thresholds: {_e(thresholds)}</p>
</section>"""


def _histogram_section(data: ReportData) -> str:
    times = [
        row.generated.generation_time
        for row in data.prompts
        if row.generated is not None and row.generated.generation_time > 0
    ]
    limit = data.policy.median_limit_seconds
    if not times:
        return '<section id="times"><h2>Generation times</h2><p>no generation yet</p></section>'
    top = max(max(times), limit) * 1.05
    width = top / HISTOGRAM_BINS
    counts = [0] * HISTOGRAM_BINS
    for t in times:
        counts[min(int(t / width), HISTOGRAM_BINS - 1)] += 1
    peak = max(counts)
    w, h, pad = 600.0, 200.0, 24.0
    bar_w = (w - 2 * pad) / HISTOGRAM_BINS
    bars = []
    for i, n in enumerate(counts):
        bh = (h - 2 * pad) * n / peak
        x = pad + i * bar_w
        lo, hi = i * width, (i + 1) * width
        bars.append(
            f'<rect class="bar" x="{x:.1f}" y="{h - pad - bh:.1f}" width="{bar_w - 1:.1f}" '
            f'height="{bh:.1f}"><title>{lo:.1f}-{hi:.1f} s: {n}</title></rect>'
        )
    lx = pad + (w - 2 * pad) * limit / top
    ticks = "".join(
        f'<text x="{pad + (w - 2 * pad) * f:.1f}" y="{h - 6:.1f}" class="tick">'
        f"{top * f:.{_digits(top)}f}s</text>"
        for f in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    median = sorted(times)[len(times) // 2]
    return f"""<section id="times"><h2>Generation times</h2>
<p>{len(times)} generations, median {median:.2f} s; the red line is the median limit
({limit:g} s).</p>
<svg viewBox="0 0 {w:.0f} {h:.0f}" role="img" aria-label="histogram of generation times">
{"".join(bars)}
<line class="limit" x1="{lx:.1f}" x2="{lx:.1f}" y1="{pad / 2:.1f}" y2="{h - pad:.1f}"/>
<text class="limit-label" x="{lx + 4:.1f}" y="{pad:.1f}">limit {limit:g}s</text>
{ticks}
</svg></section>"""


def _digits(top: float) -> int:
    return 0 if top >= 10 else 1 if top >= 1 else max(1, -math.floor(math.log10(top)) + 1)


def _pods_section(data: ReportData) -> str:
    if not data.pods:
        return '<section id="pods"><h2>Pods</h2><p>no pod_stats.json</p></section>'
    rows = []
    for name, s in data.pods.items():
        median = f"{s.time_median:.2f}" if s.time_median else "-"
        bad = "yes" if s.marked_bad else "no"
        rows.append(
            f"<tr><td>{_e(s.pod_id or name)}</td><td>{s.processed}</td><td>{s.successful}</td>"
            f"<td>{s.hard_failed}</td><td>{s.hard_overtime}</td><td>{median}</td>"
            f"<td>{bad}</td><td>{_e(s.termination_reason or '')}</td></tr>"
        )
    return f"""<section id="pods"><h2>Pods</h2><div class="scroll"><table>
<thead><tr><th>pod</th><th>processed</th><th>ok</th><th>failed</th><th>overtime</th>
<th>median s</th><th>marked bad</th><th>why it ended</th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></section>"""


def _prompts_section(data: ReportData, images: ImageLoader) -> str:
    rows = []
    for row in sorted(data.prompts, key=lambda r: r.mismatch is None):  # mismatches first
        g = row.generated
        time_s = f"{g.generation_time:.2f} s" if g is not None else "-"
        distance = f"{g.distance:.4f}" if g is not None and g.distance is not None else "-"
        attempts = str(g.attempts) if g is not None else "0"
        status = "mismatch" if row.mismatch else "match"
        flags = " critical" if row.critical else ""
        label = f"mismatch: {row.mismatch}" if row.mismatch else "match"
        rows.append(
            f'<tr class="{status}{flags}"><td class="stem">{_e(row.stem)}'
            f"{'<br><small>critical</small>' if row.critical else ''}</td>"
            f'<td class="img">{_img(row.submitted_png, images, "submitted")}</td>'
            f'<td class="img">{_img(g.png if g else None, images, "regenerated")}</td>'
            f"<td>{time_s}</td><td>{distance}</td><td>{attempts}</td>"
            f'<td class="pods">{_e(", ".join(row.pods)) or "-"}</td>'
            f'<td class="status">{_e(label)}</td></tr>'
        )
    return f"""<section id="prompts"><h2>Prompts ({len(data.prompts)})</h2>
<div class="scroll"><table><thead><tr><th>prompt</th><th>submitted</th><th>regenerated</th>
<th>time</th><th>distance</th><th>attempts</th><th>pods</th><th></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table></div></section>"""


def _img(url: str | None, images: ImageLoader, what: str) -> str:
    if url is None:
        return f'<span class="missing">no {what} preview</span>'
    data = images(url)
    if data is None:  # not embeddable here: let the reader's browser try the URL
        if urlparse(url).scheme in {"http", "https"}:
            return f'<img alt="{what} (not embedded)" src="{_e(url)}">'
        return f'<span class="missing">{what} preview unavailable</span>'
    encoded = base64.b64encode(data).decode()
    return f'<img alt="{what}" src="data:image/png;base64,{encoded}">'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:12px;color:#222}
h1{font-size:1.3em;word-break:break-all}h2{font-size:1.1em;margin-top:1.5em}
.verdict{border-radius:8px;padding:8px 14px}.verdict.passed{background:#e8f7ee}
.verdict.rejected{background:#fdecea}.verdict.pending{background:#eee}
.outcome{font-weight:bold}.small{font-size:.85em;color:#555}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dd{margin:0}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:middle}
td.img img{width:160px;max-width:40vw;height:auto;display:block}
tr.mismatch td.status{color:#c0392b;font-weight:bold}tr.match td.status{color:#27ae60}
.stem{word-break:break-all;max-width:12em}.missing{color:#999;font-style:italic}
svg{width:100%;height:auto;max-width:600px}.bar{fill:#3498db}
.limit{stroke:#e74c3c;stroke-width:2;stroke-dasharray:4 3}.limit-label{fill:#e74c3c;font-size:11px}
.tick{font-size:10px;fill:#555;text-anchor:middle}
"""
