"""POST /v1/preferences: a judgement becomes one line the trainers read; bad bodies are 400s naming the
field; 16 concurrent clients lose no line and interleave no bytes; a failed write leaves no half
line; `llmlab dpo --data FILE` trains on what was clicked and raises the chosen answers' margin."""

from __future__ import annotations

import copy
import json
import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from llmlab.align.data import read_preferences
from llmlab.cli import main
from llmlab.cli.serve import compare_models
from llmlab.errors import UserError
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir
from llmlab.serve import create_app
from llmlab.serve import preferences as prefs_module
from llmlab.serve.preferences import PreferenceLog

from .conftest import KEY, MODEL, running

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Norway?"}]


def judgement(choice="a", a="Oslo.", b="Rome.", **extra) -> dict:
    return {"prompt": PROMPT, "a": {"content": a, "model": "sft"}, "b": {"content": b, "model": "dpo"},
            "choice": choice, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def recorder(model, tok, tmp_path_factory):
    """A server that records judgements (with a key: the route needs the same auth as the rest), and
    serves a second model, "other", beside the first."""
    path = tmp_path_factory.mktemp("prefs") / "prefs.jsonl"
    other = copy.deepcopy(model)
    app = create_app(model, tok, model_name=MODEL, api_key=KEY, max_batch=2, preferences=path,
                     compare={"other": lambda: (other, tok)})  # fmt: skip
    with running(app) as url:
        yield url, path


def post(url: str, body, **kw) -> httpx.Response:
    return httpx.post(url + "/v1/preferences", json=body, headers={"Authorization": f"Bearer {KEY}"}, **kw)


def lines_of(path, annotator: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in rows if r["meta"].get("annotator") == annotator]


def test_a_judgement_is_a_line_the_trainers_read(recorder, tmp_path):
    url, path = recorder
    sampling = {"temperature": 0.8, "top_p": 0.95}
    r = post(url, judgement("b", edited="Rome, no: Oslo.", annotator="ann-1", sampling=sampling))
    assert r.status_code == 200 and r.json()["label"] == "b"
    assert post(url, judgement("tie", annotator="ann-1")).status_code == 200
    edited, tie = lines_of(path, "ann-1")
    assert (
        edited["prompt"] == PROMPT and edited["chosen"] == "Rome, no: Oslo." and edited["rejected"] == "Oslo."
    )
    meta = edited["meta"]
    assert meta["label"] == "b" and meta["models"] == {"chosen": "dpo", "rejected": "sft"}
    assert meta["original"] == "Rome." and meta["sampling"] == sampling and meta["time"].endswith("Z")
    assert (tie["chosen"], tie["rejected"], tie["meta"]["label"]) == ("Oslo.", "Rome.", "tie")

    mine = tmp_path / "mine.jsonl"
    mine.write_text("".join(json.dumps(x) + "\n" for x in (edited, tie)))
    (pair,) = read_preferences(mine)  # the tie is skipped unless asked
    assert pair.chosen == [{"role": "assistant", "content": "Rome, no: Oslo."}] and pair.prompt == PROMPT
    assert len(read_preferences(mine, keep_ties=True)) == 2

    # The docs' curl body: a string prompt is one user turn; no annotator, no sampling.
    plain = {
        "prompt": "Capital of Norway?",
        "a": {"content": "Oslo."},
        "b": {"content": "Rome."},
        "choice": "a",
    }
    assert post(url, plain).status_code == 200
    last = json.loads(path.read_text().splitlines()[-1])
    assert last["prompt"] == [{"role": "user", "content": "Capital of Norway?"}]
    assert set(last["meta"]) == {"label", "models", "time"}


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({k: v for k, v in judgement().items() if k != "choice"}, "choice", "choice: Field required"),
        (judgement("c"), "choice", "choice: "),
        (judgement(prompt=[{"role": "assistant", "content": "Hi"}]), "prompt", "prompt: message 0"),
        (judgement(a="  "), "a", "a: an empty answer"),
        (judgement("tie", edited="better"), "edited", "edited: "),
        ({**judgement(), "b": {"model": "x"}}, "b", "b.content: Field required"),
    ],
)
def test_a_malformed_judgement_is_a_400_naming_the_field(recorder, body, param, says):
    url, path = recorder
    before = path.read_bytes() if path.exists() else b""
    r = post(url, body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert (
        err["type"] == "invalid_request_error" and err["param"] == param and err["message"].startswith(says)
    )
    assert (path.read_bytes() if path.exists() else b"") == before  # nothing written


def test_not_json_needs_key_and_off_by_default(recorder, base_url):
    url, _ = recorder
    r = httpx.post(url + "/v1/preferences", content=b"{no", headers={"Authorization": f"Bearer {KEY}",
                                                                      "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert httpx.post(url + "/v1/preferences", json=judgement()).status_code == 401
    off = httpx.post(base_url + "/v1/preferences", json=judgement())
    assert off.status_code == 404 and off.json()["error"]["code"] == "preferences_off"


def test_sixteen_concurrent_clients_lose_no_line_and_interleave_no_bytes(recorder):
    url, path = recorder
    # Long answers (a line is ~200 kB, past any buffer size), so interleaved writes would tear lines.
    bodies = [judgement(a=f"{i:03d}" + "x" * 100_000, b=f"{i:03d}" + "y" * 100_000, annotator="burst")
              for i in range(64)]  # fmt: skip

    def client(chunk):
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            return [c.post(url + "/v1/preferences", json=b).status_code for b in chunk]

    with ThreadPoolExecutor(16) as pool:
        codes = [c for cs in pool.map(client, [bodies[i::16] for i in range(16)]) for c in cs]
    assert codes == [200] * 64
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    rows = lines_of(path, "burst")  # json.loads of every line of the file: no torn line anywhere
    assert sorted(r["chosen"] for r in rows) == sorted(b["a"]["content"] for b in bodies)


def test_a_failed_write_leaves_no_half_line_and_a_torn_line_is_closed(tmp_path, monkeypatch):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "torn')  # a crash in the middle of a line, before this start
    log = PreferenceLog(path)
    real_write = os.write
    monkeypatch.setattr(prefs_module.os, "write", lambda fd, data: real_write(fd, data[:7]))  # disk full
    with pytest.raises(OSError, match="short write"):
        log.append({"n": 1})
    assert path.read_bytes() == b'{"prompt": "torn\n'
    monkeypatch.setattr(prefs_module.os, "write", real_write)
    log.append({"n": 2})
    log.close()
    assert path.read_bytes().splitlines() == [b'{"prompt": "torn', b'{"n": 2}']


def test_dpo_on_clicked_judgements_raises_the_chosen_margin(recorder, tok, tmp_path, capsys):
    """Scripted judgements through the endpoint → `llmlab dpo --data FILE` → the margin goes up."""
    url, path = recorder
    facts = [("Norway", "Oslo"), ("Italy", "Rome"), ("Chile", "Santiago"), ("Peru", "Lima"),
             ("Spain", "Madrid"), ("Japan", "Tokyo")]  # fmt: skip
    for i, (country, city) in enumerate(facts):
        body = judgement("b" if i % 2 else "a", annotator="dpo-script")
        body["prompt"] = [{"role": "user", "content": f"Capital of {country}?"}]
        right, wrong = f"{city}.", "I do not know."
        body["a"]["content"], body["b"]["content"] = (wrong, right) if i % 2 else (right, wrong)
        assert post(url, body).status_code == 200
    assert post(url, judgement("both_bad", annotator="dpo-script")).status_code == 200
    data = tmp_path / "clicked.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lines_of(path, "dpo-script")))

    cfg = ModelConfig(vocab_size=tok.vocab_size, n_layer=1, d_model=32, n_head=2, n_kv_head=1, d_ff=64,
                      context=64)  # fmt: skip
    save_model_dir(tmp_path / "sft", Transformer(cfg), tok, generation={"chat_template": "llmlab-v2"})
    out = tmp_path / "dpo"
    sets = ["train.device=cpu", "train.log_every=1", "dpo.steps=8", "dpo.batch_size=6", "dpo.lr=1e-2",
            "dpo.val_fraction=0"]  # fmt: skip
    args = ["dpo", "--model", str(tmp_path / "sft"), "--data", str(data), "--out", str(out), "--json"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["pairs"] == 6 and "skipped 1 tie" in captured.err
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["rewards/margins"] == 0.0  # π = π_ref at the start
    assert records[-1]["rewards/margins"] > 1.0 and records[-1]["rewards/accuracies"] == 1.0


def test_keep_ties_is_a_recipe_key_of_reward_and_dpo():
    from llmlab.config import load_recipe

    r = load_recipe(None, ["dpo.keep_ties=true", "reward.keep_ties=true"])
    assert r.dpo.keep_ties and r.reward.keep_ties and not load_recipe(None, []).dpo.keep_ties
    with pytest.raises(UserError, match=r"dpo\.keep_ties"):
        load_recipe(None, ["dpo.keep_ties=3"])


def test_a_second_model_is_served_beside_the_first(recorder):
    url, _ = recorder
    auth = {"Authorization": f"Bearer {KEY}"}
    ids = [m["id"] for m in httpx.get(url + "/v1/models", headers=auth).json()["data"]]
    assert ids == [MODEL, "other"]
    for name in ids:
        body = {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        r = httpx.post(url + "/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 200 and r.json()["model"] == name
    r = httpx.post(url + "/v1/chat/completions", json={**body, "model": "nope"}, headers=auth)
    assert r.status_code == 404 and "serves 'tiny', 'other'" in r.json()["error"]["message"]


def test_compare_model_specs(tmp_path):
    for d in ("sft", "dpo"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "config.json").write_text("{}")
    sft, dpo = tmp_path / "sft", tmp_path / "dpo"
    assert compare_models([f"base={sft}", str(dpo)], "main") == {"base": sft, "dpo": dpo}
    with pytest.raises(UserError, match="is taken"):
        compare_models([f"main={sft}"], "main")
    with pytest.raises(UserError, match="not a model directory"):
        compare_models([f"x={tmp_path}"], "main")
