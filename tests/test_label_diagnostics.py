"""The issue-#16 diagnostics of the labels: bench/label_signal.py (where the labels move away from the base model)
and bench/name_positions.py (the labels at the anchors' edges changed); bench/name_dense_text.py (guard text)."""

from __future__ import annotations

import math

import pytest
import torch

from bench import label_signal, name_dense_text, name_positions


def test_label_signal_groups_and_kl():
    """Positions are grouped by where they stand relative to the anchors (original positions; position i predicts
    token i + 1), and KL(p || q) skips tokens with p = 0 (the suppressed ones) instead of giving NaN."""
    bench = label_signal
    starts = {5}
    assert bench.group_of(4, starts, None) == "predicts an anchor"
    assert bench.group_of(4, starts, 2) == "predicts an anchor"  # predicting an anchor wins over the distance
    assert bench.group_of(7, starts, 7) == "anchor's last token"
    assert [bench.group_of(i, starts, 7) for i in (8, 15, 16, 39, 40)] == \
        ["1-8 after", "1-8 after", "9-32 after", "9-32 after", "more than 32 after"]
    assert bench.group_of(3, starts, None) == "more than 32 after"  # no anchor yet in the block
    logp = torch.log_softmax(torch.tensor([0.0, 0.0, float("-inf")]), -1)
    logq = torch.log_softmax(torch.tensor([1.0, 0.0, 0.0]), -1)
    expected = sum(0.5 * (math.log(0.5) - float(logq[i])) for i in (0, 1))
    assert bench.kl(logp, logq) == pytest.approx(expected) and bench.kl(logq, logq) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(SystemExit, match="reinforce stage has finished"):
        bench.main(["--run", "/nonexistent/run"])


def test_name_positions_edge_rows_and_refusals(tmp_path):
    """An anchor's edges, in label rows: the row of its first token (predicted by the position before it) and the
    row after its last token (the last token's prediction); none before the block or past its end. A missing
    source and an existing destination are refused, so nothing is overwritten."""
    bench = name_positions
    assert bench.edge_rows([(3, 4), (9, 9)], 20) == [3, 5, 9, 10]
    assert bench.edge_rows([(0, 1)], 20) == [2]  # an anchor at the block start: nothing predicts it
    assert bench.edge_rows([(17, 19)], 20) == [17]  # the block's last token predicts nothing
    assert bench.edge_rows([(3, 4), (5, 6)], 20) == [3, 5, 7]  # adjacent anchors share an edge
    with pytest.raises(SystemExit, match="finish its labels stage"):
        bench.main([str(tmp_path / "missing"), str(tmp_path / "new"), "--mode", "mask"])
    src = tmp_path / "src"
    (src / "labels" / "dataset").mkdir(parents=True)
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="nothing is overwritten"):
        bench.main([str(src), str(tmp_path / "taken"), "--mode", "mask"])


def test_name_positions_leaves_no_half_made_run_when_it_fails(tmp_path, monkeypatch):
    """The new run is built in a hidden sibling folder and renamed into place only when complete: a failure while
    copying (here the source lacks its upstream stages) leaves neither the destination nor the partial folder."""
    from types import SimpleNamespace

    import datasets

    bench = name_positions
    src = tmp_path / "src"
    (src / "labels" / "dataset").mkdir(parents=True)
    recipe = SimpleNamespace(model=SimpleNamespace(spec="tiny"), labels=SimpleNamespace(seed=0))
    monkeypatch.setattr(bench.Recipe, "from_yaml", staticmethod(lambda path: recipe))
    monkeypatch.setattr(bench, "load_model", lambda spec, dtype: (None, None))
    monkeypatch.setattr(bench.AnchorDictionary, "load", staticmethod(lambda path: None))
    monkeypatch.setattr(bench, "Translator", lambda dictionary, tokenizer: None)
    monkeypatch.setattr(bench, "read_blocks", lambda path: [])
    monkeypatch.setattr(datasets, "load_from_disk", lambda path: SimpleNamespace(column_names=[]))
    with pytest.raises(FileNotFoundError):
        bench.main([str(src), str(tmp_path / "new"), "--mode", "mask"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_name_dense_text_keeps_the_paragraphs_richest_in_names_in_order(tmp_path):
    """Capitalised words inside sentences count as names, sentence starts and WikiText's <unk> do not; the densest
    paragraphs are kept until the character budget is reached, in their original order; headings and short
    paragraphs never are."""
    assert name_dense_text.name_density("He met Anna Karenina in Moscow . Then he left") == pytest.approx(3 / 10)
    assert name_dense_text.name_density("Then <unk> left . The end") == 0.0
    plain = " ".join(["the cat sat on the mat"] * 2)
    names = " ".join(["and then Jane Eyre met Mr Rochester at Thornfield"] * 2)
    text = "\n".join([" = Heading Of Many Capitals = ", f"a {plain}", f"b {names}", "c Tiny Paragraph Of Names",
                      f"d {names} Bath", f"e {plain}"])
    assert name_dense_text.name_dense(text, chars=1, min_words=10) == [f"d {names} Bath"]
    assert name_dense_text.name_dense(text, chars=len(names) + 10, min_words=10) == [f"b {names}", f"d {names} Bath"]
    out = tmp_path / "dense.txt"
    (tmp_path / "src.txt").write_text(text)
    assert name_dense_text.main([str(tmp_path / "src.txt"), "--out", str(out), "--chars", "1", "--min-words", "10"]) == 0
    assert out.read_text() == f"d {names} Bath\n"
    with pytest.raises(SystemExit, match="no paragraph of at least 500 words"):
        name_dense_text.main([str(tmp_path / "src.txt"), "--out", str(out), "--min-words", "500"])
