"""Views of what a run attends to (`attnlab inspect`): the kept weights are each row's largest
weights as the recorder gives them, blocks of rows change nothing, padding is never shown, rollout
follows its formula, the page holds its data and nothing from the network, each task kind labels
its positions, and the CLI routes and refuses in one line."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import attnlab
import attnlab.train
from attnlab import tasks
from attnlab.cli.app import app
from attnlab.errors import InputError
from attnlab.inspect import views
from attnlab.models import EncoderClassifier, Seq2Seq, SequentialRecommender, ViT
from attnlab.tasks.base import Inspection
from attnlab.tasks.image import PixelEncoder
from attnlab.tasks.recommendation import ItemIndex
from attnlab.tasks.text import TextEncoder, train_tokenizer
from attnlab.tasks.translation import TranslationEncoder, Translator, train_bpe
from attnlab.train.config import load_experiment

runner = CliRunner()
TEXTS = ["the cat sat on the mat", "a dog ran in the park", "free prize call now to claim",
         "see you at the station later"] * 4


def _experiment(name: str, task: dict, **more) -> object:
    return load_experiment({"name": name, "task": task, "train": {"epochs": 1}, **more})


def _classifier(**settings) -> EncoderClassifier:
    torch.manual_seed(0)
    config = {"vocab_size": 40, "num_classes": 2, "d_model": 16, "layers": 2, "heads": 2,
              "pad_id": 0, "max_len": 32, **settings}
    return EncoderClassifier(EncoderClassifier.Config(**config)).eval()


def _ids(model, ids: list[int]) -> Inspection:
    exp = _experiment("ids", {"name": "listops"})
    return tasks.kind("sequence-classification").inspection(model, None, exp,
                                                            example=torch.tensor([ids]))


def _recorded(model, ids: list[int]) -> list[torch.Tensor]:
    with torch.no_grad(), attnlab.record(model) as rec:
        model(torch.tensor([ids]))
    return [rec.weights(layer)[0] for layer in rec.layers]


def test_kept_weights_are_each_rows_largest_and_padding_is_never_shown(monkeypatch) -> None:
    monkeypatch.setattr(views, "EVERY", 0)  # short rows keep only their top weights too
    model, ids = _classifier(), [5, 7, 9, 11, 13, 0, 0]  # two padding positions
    view = views.build(model, _ids(model, ids), top=3)
    assert view.labels["tokens"] == ["5", "7", "9", "11", "13"]
    for m, full in zip(view.maps, _recorded(model, ids), strict=False):  # layers, then the rollout
        real = full[:, :5, :5]  # padding rows and columns left out
        values = real.topk(3, dim=-1).values
        assert np.allclose(m.value, values.numpy(), atol=1e-6)
        assert np.allclose(np.take_along_axis(real.numpy(), m.index.astype(np.int64), -1), m.value)
        assert np.allclose(m.mass, (values.sum(-1) / real.sum(-1)).numpy(), atol=1e-6)
    assert torch.allclose(full[:, :, 5:], torch.zeros(()))  # nothing was lost with the padding


def test_blocks_of_rows_give_what_one_block_gives(monkeypatch) -> None:
    model, ids = _classifier(), list(range(3, 20))
    whole = views.build(model, _ids(model, ids))
    monkeypatch.setattr(views, "BLOCK", 1)  # one query row per recomputation
    rows = views.build(model, _ids(model, ids))
    for a, b in zip(whole.maps, rows.maps, strict=True):
        assert np.array_equal(a.index, b.index) and np.allclose(a.value, b.value, atol=1e-7)


def test_one_example_of_a_padded_batch_shows_what_it_shows_alone() -> None:
    model = _classifier()
    batch = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0], [14, 15, 16, 17, 0, 0]])
    alone = views.build(model, _ids(model, [11, 12, 13]))
    inspection = _ids(model, batch[1].tolist())
    inspection.forward, inspection.row = (lambda: model(batch)), 1
    picked = views.build(model, inspection)
    assert picked.labels == alone.labels == {"tokens": ["11", "12", "13"]}
    for a, b in zip(alone.maps, picked.maps, strict=True):
        assert np.array_equal(a.index, b.index) and np.allclose(a.value, b.value, atol=1e-6)


def test_a_causal_model_keeps_no_weight_on_a_later_token() -> None:
    from attnlab.models import DecoderLM

    torch.manual_seed(0)
    model = DecoderLM(DecoderLM.Config(vocab_size=30, d_model=16, layers=1, heads=2)).eval()
    exp = _experiment("copy", {"name": "copy"})
    view = views.build(model, tasks.kind("language-modelling").inspection(model, None, exp,
                                                                          text="3 1 4 1 5 9"))
    m = view.maps[0]
    kept = m.value > 0
    rows = np.arange(6)[None, :, None]
    assert (m.index[kept.nonzero()] <= np.broadcast_to(rows, m.index.shape)[kept.nonzero()]).all()
    assert np.allclose(m.dense(0).sum(-1), 1, atol=1e-5)  # 6 keys, top 24: every weight kept


def test_rollout_is_the_product_of_head_averaged_layers_with_the_residual() -> None:
    """Abnar & Zuidema 2020: Â_l = ½I + ½·mean_h W_l, rows renormalised; rollout = Â_L … Â_1."""
    model, ids = _classifier(), [4, 6, 8, 10, 0]
    view = views.build(model, _ids(model, ids), top=32)
    eye = torch.eye(4)
    steps = [(0.5 * eye + 0.5 * w[:, :4, :4].mean(0)) for w in _recorded(model, ids)]
    steps = [a / a.sum(-1, keepdim=True) for a in steps]
    expected = steps[1] @ steps[0]
    rollout = view.maps[-1]
    assert rollout.label == "rollout" and rollout.heads == 1
    assert np.allclose(rollout.dense(0), expected.numpy(), atol=1e-6)


def test_short_rows_keep_every_weight() -> None:
    model, ids = _classifier(), [5, 7, 9, 11, 13]
    view = views.build(model, _ids(model, ids), top=2)
    for m, full in zip(view.maps, _recorded(model, ids), strict=False):
        assert m.whole and all(np.allclose(m.dense(h), full[h].numpy(), atol=1e-6) for h in range(2))
    assert views.summary(view, 2048).startswith("2 kB, every weight, 5 tokens × 2 heads × 2 layers")


def test_the_data_of_a_view_is_bounded_by_taking_fewer_weights_per_row(monkeypatch) -> None:
    monkeypatch.setattr(views, "EVERY", 0)
    # 2 layers × 2 heads × 20 rows + 20 rollout rows = 100 rows at 7 bytes + 4 per weight
    assert views._fitting(24, [(2, 20), (2, 20)], 20, max_bytes=100 * (7 + 4 * 5)) == 5
    assert views._fitting(24, [(2, 20)], 0, max_bytes=10**9) == 24
    model = _classifier()
    # 29 tokens: (2 layers × 2 heads + the rollout) × 29 rows, 6 weights each fit
    view = views.build(model, _ids(model, list(range(1, 30))), max_bytes=5 * 29 * (7 + 4 * 6))
    assert view.top == 6 and view.maps[0].value.shape[-1] == 6


def _embedded(page: str) -> dict:
    return json.loads(re.search(r"const DATA = (.*);\n", page).group(1))


def test_the_page_holds_its_data_states_its_size_and_reaches_for_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(views, "EVERY", 0)
    model = _classifier()
    view = views.build(model, _ids(model, [5, 7, 9, 11, 13, 0]), top=4)
    path, said = views.write_html(view, tmp_path / "view.html", layer=0, head=1)
    page = path.read_text()
    size = path.stat().st_size
    assert said.startswith(f"{size / 1024:.0f} kB, top 4 weights per row, 5 tokens × 2 heads × 2 layers")
    assert said in page  # the page states its own size
    assert not re.search(r"https?:|//cdn|<link|\bsrc=|@import|url\(", page)
    data = _embedded(page)
    assert data["start"] == {"map": 0, "head": 1} and data["sequences"]["tokens"][0] == "5"
    m, kept = data["maps"][0], view.maps[0]
    index = np.frombuffer(base64.b64decode(m["index"]), "<u2").reshape(kept.index.shape)
    level = np.frombuffer(base64.b64decode(m["level"]), np.uint8).reshape(kept.index.shape)
    scale = np.frombuffer(base64.b64decode(m["scale"]), "<f4").reshape(kept.mass.shape)
    assert np.array_equal(index, kept.index)
    # levels are 255ths of each row's largest weight: within half a level of the weight
    assert np.allclose(level / 255 * scale[..., None], kept.value, atol=float(scale.max()) / 510 + 1e-7)


def test_a_token_that_closes_a_script_cannot_end_the_pages_script(tmp_path) -> None:
    model = _classifier()
    inspection = _ids(model, [5, 7])
    inspection.sequences["tokens"][0] = "</script><b>"
    page = views.write_html(views.build(model, inspection), tmp_path / "v.html")[0].read_text()
    assert page.count("</script>") == 1 and _embedded(page)["sequences"]["tokens"][0] == "</script><b>"


def test_text_views_label_word_pieces_and_leave_padding_out() -> None:
    tokenizer = train_tokenizer(TEXTS, 60)
    encoder = TextEncoder(tokenizer, 16, ("ham", "spam"))
    model = _classifier(vocab_size=tokenizer.get_vocab_size(), max_len=16, pooling="cls")
    exp = _experiment("spam", {"name": "sms-spam"})
    inspection = tasks.kind("text-classification").inspection(model, encoder, exp, text="the cat sat")
    ids = encoder(["the cat sat"])[0]
    pieces = [tokenizer.id_to_token(i) for i in ids.tolist() if i != 0]
    shown = [inspection.sequences["tokens"][i] for i in inspection.shown["tokens"]]
    assert shown == ["[CLS]", *pieces]  # the model's own [CLS] first, then the text's ids
    assert pieces[0] == "[CLS]" and len(inspection.sequences["tokens"]) == len(pieces) + 1
    assert re.match(r"spam: “the cat sat” → (ham|spam) \(\d\.\d\d\)", inspection.title)
    with pytest.raises(InputError, match="not images"):
        tasks.kind("text-classification").inspection(model, encoder, exp, image=np.zeros((8, 8)))


def test_image_views_know_where_the_patches_are(tmp_path) -> None:
    torch.manual_seed(0)
    model = ViT(ViT.Config(image_size=8, patch_size=2, channels=1, num_classes=3, d_model=16,
                           layers=2, heads=2)).eval()
    exp = _experiment("digits-run", {"name": "digits"})
    encoder = PixelEncoder(4.0, 2.0, ("a", "b", "c"))
    image = np.arange(64, dtype=np.float32).reshape(8, 8) % 17
    task = tasks.kind("image-classification")
    inspection = task.inspection(model, encoder, exp, image=image)
    assert inspection.picture.grid == 4 and inspection.picture.first == 1
    assert inspection.sequences["patches"][:2] == ["[CLS]", "patch (0, 0)"]
    view = views.build(model, inspection)
    assert [m.heads for m in view.maps] == [2, 2, 1]
    # the heat over the image is the [CLS] row's weight on each patch, laid out row by row
    heat = views._looked_at(view.maps[0].dense(1), inspection.picture)
    assert np.allclose(heat, view.maps[0].dense(1)[0, 1:].reshape(4, 4))
    assert views.write_png(view, tmp_path / "digit.png").stat().st_size > 1000
    with pytest.raises(InputError, match="not text"):
        task.inspection(model, encoder, exp, text="hello")
    with pytest.raises(InputError, match="is 9×9 pixels; digits-run takes grey 8×8"):
        task.inspection(model, encoder, exp, image=np.zeros((9, 9)))


def test_translation_views_align_source_and_the_beam_searched_target(tmp_path) -> None:
    pairs = [("the house is red", "la casa es roja"), ("the dog is big", "el perro es grande")] * 4
    encoder = TranslationEncoder(train_bpe([s for s, _ in pairs], 40),
                                 train_bpe([t for _, t in pairs], 40), 12)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2Seq.Config(src_vocab=encoder.source.get_vocab_size(),
                                   tgt_vocab=encoder.target.get_vocab_size(), d_model=16, layers=1,
                                   heads=2, max_len=12)).eval()
    exp = _experiment("tr", {"name": "kjv-spanish"}, decode={"beam_size": 2})
    inspection = tasks.kind("translation").inspection(model, encoder, exp, text="the house")
    assert inspection.layers == {"encoder.0.attention": ("source", "source"),
                                 "decoder.0.attention": ("target", "target"),
                                 "decoder.0.cross_attention": ("target", "source")}
    src = encoder.encode_source(["the house"])
    out = Translator(model, encoder, exp.decode).generate(src[:, : int(src.ne(0).sum())])[0].tolist()
    produced = out[1:out.index(2) + 1] if 2 in out else out[1:]  # up to and with [EOS]
    assert len(inspection.sequences["target"]) == len(produced)
    assert inspection.sequences["source"][0] == "the"
    view = views.build(model, inspection)
    start = view.maps[view.start()]
    assert (start.query, start.key) == ("target", "source")  # the alignment matrix first
    assert start.dense(0).shape == (len(produced), len(inspection.sequences["source"]))
    assert [m.label for m in view.maps][-1] == "rollout" and view.maps[-1].query == "source"


def test_recommendation_views_show_the_history_by_title() -> None:
    items = ItemIndex(("1", "2", "50"), torch.zeros(4), max_len=5)
    torch.manual_seed(0)
    model = SequentialRecommender(SequentialRecommender.Config(num_items=3, d_model=8, heads=1,
                                                               max_len=5)).eval()
    exp = _experiment("recs", {"name": "movielens-100k"}, attention="scaled_dot ; causal ; softmax")
    task = tasks.kind("recommendation")
    inspection = task.inspection(model, items, exp, text="50 1")
    titles = attnlab.data.datasets.item_titles("movielens-100k")
    assert [inspection.sequences["items"][i] for i in inspection.shown["items"]] == \
        [titles["50"], titles["1"]]
    assert inspection.shown["items"] == [3, 4]  # left-padded: the newest item last
    with pytest.raises(InputError, match="not in it: 999"):
        task.inspection(model, items, exp, text="1 999")


def test_generated_runs_read_token_ids() -> None:
    model = _classifier()
    exp = _experiment("ids", {"name": "listops"})
    task = tasks.kind("sequence-classification")
    assert task.inspection(model, None, exp, text="3 4 5").sequences["tokens"] == ["3", "4", "5"]
    with pytest.raises(InputError, match="numbers separated by spaces"):
        task.inspection(model, None, exp, text="three")
    with pytest.raises(InputError, match="outside the run's vocabulary of 40"):
        task.inspection(model, None, exp, text="3 40")


SPAM = {"name": "tiny-spam", "task": {"name": "sms-spam", "params": {"vocab_size": 300, "max_len": 16},
                                      "train_examples": 64, "val_examples": 16, "test_examples": 8},
        "model": {"d_model": 16, "layers": 1, "heads": 2},
        "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "spam"
    attnlab.train.train(load_experiment(SPAM), out, progress=False,
                        tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}")
    return out


def test_inspect_writes_the_view_by_default_and_names_what_it_wrote(run, tmp_path) -> None:
    out = tmp_path / "view.html"
    result = runner.invoke(app, ["inspect", str(run), "win a free prize now", "--out", str(out), "--png"])
    assert result.exit_code == 0, result.output
    size = out.stat().st_size
    assert f"wrote {out} ({size / 1024:.0f} kB, every weight, " in result.output
    assert out.with_suffix(".png").exists()
    result = runner.invoke(app, ["inspect", "view", str(run), "--example", "7", "--out",
                                 str(tmp_path / "x.png"), "--layer", "0", "--head", "1"])
    assert result.exit_code == 0 and (tmp_path / "x.png").exists() and not (tmp_path / "x.html").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--example", "8"], "--example 8 is out of range: .* holds 8 test example\\(s\\), 0..7"),
    (["hi", "--layer", "1"], "--layer 1 is out of range: the model has 1 attention layer\\(s\\), 0..0"),
    (["hi", "--head", "2"], "--head 2 is out of range: layer 0 has 2 head\\(s\\), 0..1"),
    (["--image", "x.png"], "classifies text, not images"),
    ([], "give one input to look at"),
])
def test_inspect_refuses_in_one_line(run, args, message, tmp_path) -> None:
    from matplotlib.image import imsave

    imsave(tmp_path / "x.png", np.zeros((8, 8)), cmap="gray")
    result = runner.invoke(app, ["inspect", str(run), *[str(tmp_path / a) if a == "x.png" else a
                                                         for a in args]])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and re.search(message, result.output)


def test_inspect_without_a_run_says_so(tmp_path) -> None:
    result = runner.invoke(app, ["inspect", str(tmp_path / "nowhere"), "hello"])
    assert result.exit_code == 2 and "holds no trained run" in result.output


def test_a_registered_inspect_command_runs_instead_of_the_view(tmp_path) -> None:
    from attnlab.cli.inspect import inspect_app

    inspect_app.command("probe")(lambda run: print(f"probed {run}"))
    try:
        assert runner.invoke(app, ["inspect", "probe", "somewhere"]).output == "probed somewhere\n"
        routed = runner.invoke(app, ["inspect", str(tmp_path / "probe"), "hello"])  # a folder named probe
        assert routed.exit_code == 2 and "holds no trained run" in routed.output
    finally:
        inspect_app.registered_commands.pop()


DIGITS = {"name": "tiny-digits", "task": {"name": "digits", "train_examples": 64, "val_examples": 16,
                                          "test_examples": 8},
          "model": {"d_model": 16, "layers": 1, "heads": 2, "patch_size": 2},
          "train": {"epochs": 1, "batch_size": 32, "lr": 0.003}}


def test_an_image_run_is_looked_at_through_an_image_file(tmp_path) -> None:
    run = tmp_path / "digits"
    attnlab.train.train(load_experiment(DIGITS), run, progress=False,
                        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    test = tasks.kind("image-classification").load_test(run, load_experiment(DIGITS))
    encoder = test.encoders
    raw = encoder.raw(test.test.inputs[2])[0]  # the set's own 0-16 scale
    np.save(tmp_path / "digit.npy", raw)
    from_file = views.inspect_run(run, image=tmp_path / "digit.npy")
    from_test = views.inspect_run(run, example=2)
    patches = 16 + from_file.inspection.picture.first  # 4×4 patches of 2×2 pixels, [CLS] if pooled by it
    assert from_file.labels == from_test.labels and len(from_file.labels["patches"]) == patches
    for a, b in zip(from_file.maps, from_test.maps, strict=True):
        assert np.allclose(a.value, b.value, atol=1e-5)
    result = runner.invoke(app, ["inspect", str(run), "--image", str(tmp_path / "digit.npy"),
                                 "--out", str(tmp_path / "digit.html")])
    assert result.exit_code == 0 and f"{patches} patches × 2 heads × 1 layers + rollout" in result.output
    result = runner.invoke(app, ["inspect", str(run), "a digit"])
    assert result.exit_code == 2 and "classifies images, not text" in result.output
