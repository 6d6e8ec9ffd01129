"""Deterministic generators for the embedded DocVQA-, InfoVQA- and ChartQA-like sets.

Each generator draws a `Doc` (a glyph page plus its question/answer pairs) from a numpy RNG at the
text level, which is cheap; pixels are produced only when a dataset is materialised. The rows follow
the real Hugging Face datasets' column schemas, so one task definition serves both: each task's definition
carries its `EmbeddedSet` (generator, columns, row builder), defined at the end of this module.
"""

from __future__ import annotations

import numpy as np

from ...task import TASKS, EmbeddedSet
from .page import GRAPHIC, Page, PageSpec
from .schemas import CHARTQA_COLUMNS, DOCVQA_COLUMNS, INFOVQA_COLUMNS, QA, Doc, chartqa_row, docvqa_row, infovqa_row

NAMES = [
    "ANNA",
    "JOHN",
    "MARIA",
    "LEE",
    "OMAR",
    "SARA",
    "IVAN",
    "MEI",
    "PAUL",
    "NINA",
    "RAJ",
    "EMMA",
    "LUIS",
    "KIM",
    "ZOE",
    "ALI",
    "TOM",
    "EVA",
    "MAX",
    "JANE",
]
CITIES = ["ROME", "OSLO", "LIMA", "PARIS", "CAIRO", "DELHI", "TOKYO", "BERN", "QUITO", "DOHA", "KIEV", "BAKU"]
ITEMS = ["MILK", "BREAD", "EGGS", "RICE", "TEA", "SOAP", "FISH", "CORN", "BEANS", "SALT", "OIL", "JAM", "PEAS"]
STORES = ["MART", "SHOP", "DELI", "FOODS", "MARKET", "STORE", "GROCER", "BAZAAR"]
WORDS = [
    "THE",
    "WE",
    "ARE",
    "GLAD",
    "TO",
    "SEND",
    "YOU",
    "OUR",
    "NEW",
    "PLAN",
    "FOR",
    "NEXT",
    "YEAR",
    "PLEASE",
    "CALL",
    "SOON",
    "THANK",
    "AND",
    "MEET",
    "WITH",
    "TEAM",
    "REPORT",
    "WEEK",
    "DUE",
]
FORM_TITLES = ["ORDER FORM", "APPLICATION", "REGISTRATION", "VISIT FORM", "CLAIM FORM", "RECORD"]
TABLE_SCHEMES = [("ITEM", "QTY", ITEMS), ("CITY", "POP", CITIES), ("NAME", "AGE", NAMES), ("YEAR", "SALES", None)]
INFO_TITLES = ["CITY FACTS", "SURVEY 2024", "OUR USERS", "TRAVEL DATA", "HEALTH", "EDUCATION", "ENERGY USE"]
INFO_LABELS = [
    "BUS",
    "CAR",
    "BIKE",
    "WALK",
    "TRAIN",
    "REMOTE",
    "ONLINE",
    "RURAL",
    "URBAN",
    "YOUNG",
    "OLDER",
    "WOMEN",
    "MEN",
    "SOLAR",
    "WIND",
    "COAL",
]
CHART_TITLES = ["SALES 2024", "VOTES", "USERS", "REVENUE", "VISITS", "EXPORTS", "SCORES", "BUDGET"]
CATEGORIES = ["CAR", "BUS", "VAN", "TAXI", "BIKE", "TRAM", "BOAT", "SHIP", "JET", "CART", "SKI", "CAB"]


def _pick(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def _date(rng) -> str:
    return f"{rng.integers(1, 29):02d}/{rng.integers(1, 13):02d}/{rng.integers(0, 100):02d}"


def _money(rng, lo=1, hi=60) -> str:
    return f"{rng.integers(lo, hi)}.{rng.integers(0, 100):02d}"


def _key_value(page: Page, row: int, key: str, value: str) -> None:
    """A key and its value on one row: adjacent, or the value flush right (`PageSpec.right_align`)."""
    page.write(row, 0, key)
    col = page.spec.cols - len(value) if page.spec.right_align else len(key) + 1
    page.write(row, col, value)


# ---------------------------------------------------------------- DocVQA-like


def _form(rng, spec) -> Doc:
    page = Page(spec)
    page.write(0, 0, _pick(rng, FORM_TITLES))
    fields = {
        "NAME": lambda: _pick(rng, NAMES),
        "DATE": lambda: _date(rng),
        "CITY": lambda: _pick(rng, CITIES),
        "CODE": lambda: f"{rng.integers(100, 9999)}",
        "PHONE": lambda: f"{rng.integers(100, 999)}-{rng.integers(1000, 9999)}"[: spec.cols - 7],
        "ID": lambda: f"{_pick(rng, 'ABCDEFGHKMNPRSTX')}{rng.integers(1000, 99999)}",
        "ZIP": lambda: f"{rng.integers(10000, 99999)}",
        "ROOM": lambda: f"{rng.integers(1, 500)}",
        "AGE": lambda: f"{rng.integers(18, 90)}",
        "REF": lambda: f"#{rng.integers(100, 99999)}",
    }
    keys = list(rng.choice(list(fields), size=int(rng.integers(4, 7)), replace=False))
    qas = []
    for i, key in enumerate(keys):
        value = fields[key]()[: spec.cols - len(key) - 2]
        page.write(2 + i * (2 if len(keys) <= 4 else 1) + (1 if len(keys) <= 4 else 0), 0, f"{key}: {value}")
        qas.append(QA(f"What is the {key}?", [value], "form"))
    return Doc(page, qas, "form")


def _receipt(rng, spec) -> Doc:
    page = Page(spec)
    store = _pick(rng, STORES)
    page.write(0, 0, f"{store} {rng.integers(1, 99)}")
    items = list(rng.choice(ITEMS, size=int(rng.integers(3, 6)), replace=False))
    prices = [_money(rng, 1, 20) for _ in items]
    qas = [QA("What is the name of the store?", [store], "receipt")]
    for i, (item, price) in enumerate(zip(items, prices)):
        _key_value(page, 2 + i, item, price)
        qas.append(QA(f"What is the price of {item}?", [price, f"${price}"], "receipt"))
    total = f"{sum(float(p) for p in prices):.2f}"
    row = 3 + len(items)
    _key_value(page, row, "TOTAL", total)
    qas.append(QA("What is the TOTAL?", [total, f"${total}"], "receipt"))
    page.write(row + 2, 0, _date(rng))
    return Doc(page, qas, "receipt")


def _letter(rng, spec) -> Doc:
    page = Page(spec)
    to, sender = rng.choice(NAMES, size=2, replace=False)
    date = _date(rng)
    page.write(0, spec.cols - len(date), date)
    page.write(2, 0, f"DEAR {to},")
    for r in range(3, 3 + int(rng.integers(2, 5))):
        line = ""
        while True:
            word = _pick(rng, WORDS)
            if len(line) + len(word) + (1 if line else 0) > spec.cols:
                break
            line = f"{line} {word}" if line else word
        page.write(r, 0, line)
    page.write(spec.rows - 3, 0, "REGARDS,")
    page.write(spec.rows - 2, 0, str(sender))
    qas = [
        QA("To whom is the letter addressed?", [str(to)], "letter"),
        QA("Who signed the letter?", [str(sender)], "letter"),
        QA("What is the date of the letter?", [date], "letter"),
    ]
    return Doc(page, qas, "letter")


def _table(rng, spec) -> Doc:
    page = Page(spec)
    key_col, val_col, keys = TABLE_SCHEMES[int(rng.integers(len(TABLE_SCHEMES)))]
    n = int(rng.integers(3, 7))
    keys = (
        [str(2015 + i) for i in rng.choice(10, size=n, replace=False)]
        if keys is None
        else [str(k) for k in rng.choice(keys, size=n, replace=False)]
    )
    _key_value(page, 0, key_col, val_col)
    page.write(1, 0, "-" * spec.cols)
    qas = []
    for i, key in enumerate(keys):
        value = str(rng.integers(10, 99 if val_col == "AGE" else 999))
        _key_value(page, 2 + i, key, value)
        qas.append(QA(f"What is the {val_col} of {key}?", [value], "table"))
    return Doc(page, qas, "table")


def docvqa_doc(rng: np.random.Generator, spec: PageSpec) -> Doc:
    return [_form, _receipt, _letter, _table][int(rng.integers(4))](rng, spec)


# ---------------------------------------------------------------- InfoVQA-like


def _icon(kind: int, row: int, col: int):
    def draw(image, spec):
        from PIL import ImageDraw

        d = ImageDraw.Draw(image)
        c = spec.cell
        box = [col * c + 1, row * c + 1, (col + 1) * c - 2, (row + 1) * c - 2]
        color = ["#d62728", "#1f77b4", "#2ca02c"][kind]
        if kind == 0:
            d.ellipse(box, fill=color)
        elif kind == 1:
            d.rectangle(box, fill=color)
        else:
            d.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=color)

    return draw


def infovqa_doc(rng: np.random.Generator, spec: PageSpec) -> Doc:
    page = Page(spec)
    title = _pick(rng, INFO_TITLES)
    page.write(0, 0, title, inverted=True)
    qas = [QA("What is the title of the infographic?", [title], "single span")]
    labels = list(rng.choice(INFO_LABELS, size=4, replace=False))
    half = spec.cols // 2
    seen: set[str] = set()
    for i, label in enumerate(labels):
        col, row = (i % 2) * half, 2 + (i // 2) * 4
        value = ""
        while not value or value in seen:  # values are unique so the reverse question has one answer
            if rng.random() < 0.6:
                value, q = f"{rng.integers(1, 100)}%", f"What percentage is shown for {label}?"
            else:
                value = f"{rng.integers(1, 10)}.{rng.integers(0, 10)}{_pick(rng, 'KM')}"
                q = f"What number is shown for {label}?"
        seen.add(value)
        page.mark_graphic(row, col)
        page.drawings.append(_icon(int(rng.integers(3)), row, col))
        page.write(row, col + 1, value, inverted=True)
        page.write(row + 1, col, str(label))
        qas.append(QA(q, [value], "single span"))
        qas.append(QA(f"Which group has the value {value}?", [str(label)], "single span"))
    return Doc(page, qas, "infographic")


# ---------------------------------------------------------------- ChartQA-like

PLOT_ROWS = (1, 7)  # rows [1, 7) hold the plot; labels follow


def _chart_geometry(kind: str, values: list[int], spec: PageSpec):
    """Cells covered by the drawing, computed from the same geometry matplotlib draws."""
    r0, r1 = PLOT_ROWS
    w, h = spec.cols * spec.cell, (r1 - r0) * spec.cell
    n, top = len(values), max(values) * 1.1
    covered = set()
    if kind == "bar":
        for i, v in enumerate(values):
            x0, x1 = (i + 0.2) / n * w, (i + 0.8) / n * w
            y0 = h - v / top * h
            for k in range(spec.cols):
                ox = max(0.0, min(x1, (k + 1) * spec.cell) - max(x0, k * spec.cell)) / spec.cell
                for r in range(r1 - r0):
                    oy = max(0.0, (r + 1) * spec.cell - max(y0, r * spec.cell)) / spec.cell
                    if ox * min(oy, 1.0) > 0.25:
                        covered.add((r0 + r, k))
    elif kind == "line":
        xs = [(i + 0.5) / n * w for i in range(n)]
        ys = [h - v / top * h for v in values]
        for (xa, ya), (xb, yb) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
            for t in np.linspace(0, 1, 40):
                x, y = xa + t * (xb - xa), ya + t * (yb - ya)
                covered.add((r0 + min(int(y // spec.cell), r1 - r0 - 1), min(int(x // spec.cell), spec.cols - 1)))
    else:  # pie: cells whose centre lies inside the disc
        cx, cy, radius = w / 2, h / 2, h / 2 - 1
        for r in range(r1 - r0):
            for k in range(spec.cols):
                if (k * spec.cell + spec.cell / 2 - cx) ** 2 + (r * spec.cell + spec.cell / 2 - cy) ** 2 < radius**2:
                    covered.add((r0 + r, k))
    return covered


def _plot(kind: str, values: list[int]):
    """Draw the chart with matplotlib into the plot rows of the page."""

    def draw(image, spec):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from PIL import Image

        r0, r1 = PLOT_ROWS
        w, h = spec.cols * spec.cell, (r1 - r0) * spec.cell
        fig = Figure(figsize=(w / 100, h / 100), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        n, top = len(values), max(values) * 1.1
        colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
        if kind == "bar":
            ax.bar(range(n), values, width=0.6, color=colors[:n])
            ax.set_xlim(-0.5, n - 0.5)
            ax.set_ylim(0, top)
        elif kind == "line":
            ax.plot(range(n), values, color="#1f77b4", linewidth=2)
            ax.set_xlim(-0.5, n - 0.5)
            ax.set_ylim(0, top)
        else:
            ax.pie(values, colors=colors[:n], radius=1.0)
            ax.set_xlim(-w / h, w / h)
            ax.set_ylim(-1.02, 1.02)
        fig.canvas.draw()
        plot = Image.frombuffer("RGBA", fig.canvas.get_width_height(), fig.canvas.buffer_rgba()).convert("RGB")
        image.paste(plot, (0, r0 * spec.cell))

    return draw


def chartqa_doc(rng: np.random.Generator, spec: PageSpec) -> Doc:
    page = Page(spec)
    kind = _pick(rng, ["bar", "line", "pie"])
    page.write(0, 0, _pick(rng, CHART_TITLES))
    n = int(rng.integers(3, 6))
    cats = [str(c) for c in rng.choice(CATEGORIES, size=n, replace=False)]
    if kind == "pie":
        cuts = np.sort(rng.choice(np.arange(5, 96), size=n - 1, replace=False))
        values = [int(v) for v in np.diff(np.concatenate([[0], cuts, [100]]))]
        shown = [f"{v}%" for v in values]
    else:
        values = [int(v) for v in rng.integers(5, 100, size=n)]
        shown = [str(v) for v in values]
    for r, k in _chart_geometry(kind, values, spec):
        page.mark_graphic(r, k)
    page.drawings.append(_plot(kind, values))
    for i, (cat, s) in enumerate(zip(cats, shown)):
        _key_value(page, PLOT_ROWS[1] + i, cat, s)
    qas = [QA(f"What is the value of {cat}?", [s], "augmented") for cat, s in zip(cats, shown)]
    order = np.argsort(values, kind="stable")
    if values.count(max(values)) == 1:
        qas.append(QA("Which category has the highest value?", [cats[order[-1]]], "human"))
    if values.count(min(values)) == 1:
        qas.append(QA("Which category has the lowest value?", [cats[order[0]]], "human"))
    a, b = rng.choice(n, size=2, replace=False)
    qas.append(
        QA(f"What is the difference between {cats[a]} and {cats[b]}?", [str(abs(values[a] - values[b]))], "human")
    )
    return Doc(page, qas, kind)


# ---------------------------------------------------------------- transcription (a training task)


def transcription_doc(rng: np.random.Generator, spec: PageSpec) -> Doc:
    """A page of any of the three kinds with one question whose answer is the page's text, line by line (drawings
    left out). A reading task with a dense signal (every token of the page is an answer token), as captioning
    is in a VLM's first training stage; the same pages for every connector."""
    doc = [docvqa_doc, infovqa_doc, chartqa_doc][int(rng.integers(3))](rng, spec)
    lines = [line.replace(GRAPHIC, " ").rstrip() for line in doc.page.lines()]
    text = "\n".join(line for line in lines if line)
    return Doc(doc.page, [QA("What does the page say?", [text], "transcription")], "transcription")


DOCVQA = EmbeddedSet(docvqa_doc, DOCVQA_COLUMNS, docvqa_row)
INFOVQA = EmbeddedSet(infovqa_doc, INFOVQA_COLUMNS, infovqa_row)
CHARTQA = EmbeddedSet(chartqa_doc, CHARTQA_COLUMNS, chartqa_row)
TRANSCRIBE = EmbeddedSet(transcription_doc, DOCVQA_COLUMNS, docvqa_row)  # embedded only, in DocVQA's columns


def sample_docs(task: str, n: int, seed: int, spec: PageSpec = PageSpec()) -> list[Doc]:
    """`n` documents of the named task's embedded set, drawn from one RNG seeded with `seed`."""
    generate = TASKS.get(task).embedded_set().generate
    rng = np.random.default_rng(seed)
    return [generate(rng, spec) for _ in range(n)]
