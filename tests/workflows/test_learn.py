"""``iondrag learn``, the model file and the learned column of ``screen`` and ``validate``."""

from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from wf_helpers import FAST_CLI, clean_env, one_line_error, run_cli

from iondrag.screening import learning
from iondrag.screening.parameters import ScreeningParameters
from iondrag.workflows.learn import LEARNED_COLUMNS, ModelFileError, load_model, save_model

REPO_ROOT = Path(__file__).resolve().parents[2]


def synthetic_model(seed: int = 5) -> learning.LearnedModel:
    rng = np.random.default_rng(seed)
    names = learning.FEATURE_SETS["both"]
    n = 80
    x = rng.normal(size=(n, len(names)))
    x[:, 0] = rng.uniform(-15, -2, size=n)
    y = 0.5 * x[:, 0] + rng.normal(scale=0.5, size=n)
    model, _ = learning.fit_model(
        x, y, np.zeros(n, bool), [f"f{k % 8}" for k in range(n)], names, n_splits=4
    )
    model.meta = {"parameters": ScreeningParameters().model_dump(mode="json"), "cv": {}}
    return model


def test_model_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    model = synthetic_model()
    path, sidecar = save_model(model, tmp_path / "m.joblib")
    assert json.loads(sidecar.read_text())["parameters"]["temperature_K"] == 300.0
    loaded = load_model(path, ScreeningParameters())
    x = np.random.default_rng(9).normal(size=(7, len(model.feature_names)))
    x[2, 5] = np.nan
    a, b = model.predict_matrix(x), loaded.predict_matrix(x)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    # no note on the parameters when they match; one when they differ
    assert not any("parameters" in n for n in loaded.meta["load_notes"])
    other = load_model(path, ScreeningParameters(temperature_K=400.0))
    assert any("temperature_K" in n for n in other.meta["load_notes"])


def test_the_load_note_names_what_changed_since_training(tmp_path: Path) -> None:
    from iondrag.adapters.journal import BVSE_LIBRARIES, code_fingerprint

    model = synthetic_model()
    current = {
        "code_fingerprint": code_fingerprint(BVSE_LIBRARIES),
        "source_fingerprint": code_fingerprint(()),
    }
    cases = {
        "none": (current, None),
        "code": ({"code_fingerprint": "x", "source_fingerprint": "y"}, "the physics code "),
        "libraries": ({**current, "code_fingerprint": "x"}, "the libraries (numpy"),
        "old file": ({"code_fingerprint": "x"}, "the physics code or its libraries"),
    }
    for name, (fingerprints, expected) in cases.items():
        model.meta = {**synthetic_model().meta, **fingerprints}
        path, _ = save_model(model, tmp_path / f"{name.replace(' ', '-')}.joblib")
        notes = [n for n in load_model(path).meta["load_notes"] if "since training" in n]
        if expected is None:
            assert notes == [], name
        else:
            assert len(notes) == 1 and notes[0].startswith(expected), (name, notes)


def test_the_shipped_model_was_trained_on_this_physics_code() -> None:
    """Any edit of the physics (``iondrag.screening``) needs the default model retrained.

    Library versions are not compared here: CI may install newer releases than the ones the
    model was trained with, which the screen reports as a load note, not as a failure.
    """
    from iondrag.adapters.journal import code_fingerprint
    from iondrag.workflows.learn import RETRAIN_COMMAND, default_model_path

    model = load_model(default_model_path())
    assert model.meta.get("source_fingerprint") == code_fingerprint(()), (
        f"the shipped model predates an edit of the physics code; retrain: {RETRAIN_COMMAND}"
    )


def test_a_model_needing_physics_this_iondrag_lacks_is_refused(tmp_path: Path) -> None:
    model = synthetic_model()
    model.feature_names = (*model.feature_names[:-1], "formation_energy_eV")
    path, _ = save_model(model, tmp_path / "future.joblib")
    with pytest.raises(ModelFileError, match=r"formation_energy_eV.*iondrag learn"):
        load_model(path)
    (tmp_path / "junk.joblib").write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a readable model"):
        load_model(tmp_path / "junk.joblib")


def _rows(db: Path) -> list[dict]:
    with closing(sqlite3.connect(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM results")]


@pytest.mark.slow
def test_screen_with_a_model_adds_the_learned_columns(tmp_path: Path) -> None:
    model_path, _ = save_model(synthetic_model(), tmp_path / "m.joblib")
    env = clean_env(tmp_path)
    ids = "lif-fm3m,li2o-fm3m"
    base = ["screen", "--ids", ids, *FAST_CLI, "--workers", "1", "--db", tmp_path / "r.sqlite"]
    done = run_cli([*base, "--model", model_path, "--json", tmp_path / "a.json"], env)
    assert done.returncode == 0, done.stderr
    assert f"learned model {model_path}" in done.stderr
    assert "learned log10 sigma [interval]" in done.stdout
    ranking = json.loads((tmp_path / "a.json").read_text())
    assert [r["rank"] for r in ranking] == [1, 2]
    for row in ranking:
        assert set(LEARNED_COLUMNS) <= set(row)
        lo, mid, hi = (row[f"log10_sigma_learned{s}_S_per_cm"] for s in ("_lo", "", "_hi"))
        assert lo < mid < hi
        assert row["sigma_S_per_cm"] is not None  # the physics headline stays
    # physics order by default; learned order on request
    sigma = [r["sigma_S_per_cm"] for r in ranking]
    assert sigma == sorted(sigma, reverse=True)
    done = run_cli([*base, "--model", model_path, "--rank-by", "learned", "--json",
                    tmp_path / "b.json"], env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    learned = [
        r["log10_sigma_learned_S_per_cm"] for r in json.loads((tmp_path / "b.json").read_text())
    ]
    assert learned == sorted(learned, reverse=True)
    db_rows = _rows(tmp_path / "r.sqlite")
    assert all(r["log10_sigma_learned_S_per_cm"] is not None for r in db_rows)
    # the shipped default model when no --model is given, said in one line
    done = run_cli([*base, "--quiet", "--json", tmp_path / "c.json"], env)
    assert done.returncode == 0, done.stderr
    done = run_cli([*base, "--json", tmp_path / "c.json"], env)
    assert "default learned model" in done.stderr and "--model none" in done.stderr
    # --model none turns it off; --rank-by learned then is a usage error
    done = run_cli([*base, "--db", tmp_path / "n.sqlite", "--model", "none", "--json",
                    tmp_path / "d.json"], env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "learned" not in done.stderr
    assert not any("learned" in k for k in json.loads((tmp_path / "d.json").read_text())[0])
    done = run_cli([*base, "--model", "none", "--rank-by", "learned"], env)
    assert done.returncode == 2
    assert "needs a model" in one_line_error(done.stderr)


def _obelix() -> Path:
    path = Path(
        os.environ.get("IONDRAG_OBELIX_DIR", REPO_ROOT.parent / "shared" / "data" / "obelix-train")
    )
    if not (path / "cifs").is_dir():
        pytest.skip(f"OBELiX training data not found at {path} (set IONDRAG_OBELIX_DIR)")
    return path


@pytest.mark.slow
def test_learn_retrains_on_a_small_obelix_subset_and_validate_reports_it(
    tmp_path: Path,
) -> None:
    obelix = _obelix()
    train = pd.read_csv(obelix / "train.csv", dtype=str, keep_default_na=False)
    cifs = {p.name[:-4] for p in (obelix / "cifs").glob("*.cif")}
    with_cif = train[train["ID"].isin(cifs)]
    # two members of each of the six largest families with a CIF: 12 structures
    subset = with_cif.groupby("Family").head(2)
    subset = subset[subset["Family"].isin(with_cif["Family"].value_counts().index[:6])]
    table = tmp_path / "subset.csv"
    subset.to_csv(table, index=False)
    env = clean_env(tmp_path)
    out = tmp_path / "model" / "m.joblib"
    args = ["--cifs", obelix / "cifs", "--table", table, "--workers", "1", "--quiet"]
    done = run_cli(["learn", *args, "--out", out, "--folds", "3"], env, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "both - composition (paired, 95 %)" in done.stdout
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["data"]["table_rows"] == len(subset)
    assert meta["data"]["attribution"].startswith("OBELiX training split")
    assert len(meta["data"]["table_sha256"]) == 64
    assert set(meta["cv"]["feature_sets"]) == {"composition", "physics", "both"}
    assert "log10_sigma_pred" in meta["physics_fields"]
    # validate with the model: reuses the journal and reports the learned predictor
    report = tmp_path / "v.json"
    done = run_cli(["validate", *args, "--model", out, "--json", report], env, timeout=900)
    assert done.returncode == 0, done.stderr
    doc = json.loads(report.read_text())
    assert "learned" in doc["ablations"]
    assert doc["inputs"]["n_reused_from_journal"] == len(subset)
    scored = [r for r in doc["per_structure"] if r["error"] is None]
    assert all(isinstance(r["log10_sigma_learned"], float) for r in scored)


def test_a_broken_default_model_warns_and_the_screen_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from iondrag.workflows import cli, learn

    junk = tmp_path / "junk.joblib"
    junk.write_bytes(b"not a model")
    monkeypatch.setattr(learn, "default_model_path", lambda: junk)
    assert cli._load_learned(None, ScreeningParameters()) is None
    assert "default learned model not used" in capsys.readouterr().err
    with pytest.raises(ModelFileError):  # a model named on the command line is refused
        cli._load_learned(str(junk), ScreeningParameters())
    assert cli._load_learned("none", ScreeningParameters()) is None
