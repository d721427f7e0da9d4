"""Code benchmark layouts -> :class:`Problem` with tests in an ``archer.rewards.run_tests`` format.

- ``humaneval``: ``task_id, prompt, test, entry_point``. The test code defines ``check(candidate)``;
  the loader appends ``check(<entry_point>)`` so the assert program is self-contained:
  ``{"assert": test + "check(f)", "entry_point": f}``. ``meta["solution"]`` = prompt + canonical
  solution (a reference program that passes).
- ``mbpp``: ``content``/``text``, ``test_list`` (assert lines), optional ``test_setup_code`` (top level
  or in ``labels``). Tests are ``{"assert": [one string per assert], "entry_point"}``. The prompt lists the asserts (as in the MBPP paper, so the model knows the function
  name); the entry point is the function the first assert calls.
- ``livecodebench``: the Archer/verl sample layout (``content`` holding the full instruction, ``test`` =
  base64(zlib(pickle(...)))) and the upstream layout (``question_content``, ``starter_code``,
  ``public_test_cases`` JSON, ``private_test_cases`` plain JSON or compressed, ``metadata`` JSON with
  ``func_name``). Compressed tests are decoded with the restricted unpickler
  ``archer.sandbox.zygote.safe_pickle.decode_lcb_tests`` (never plain ``pickle``). A ``func_name``/``fn_name``
  makes the problem functional (call-based); otherwise it is stdin/stdout.
- ``code_contests``: the sample layout (``content``, ``test`` = JSON list of
  ``{"input": {"stdin"}, "output": {"stdout"}}``) and the upstream one (``description`` with
  ``public_tests``/``private_tests``/``generated_tests`` as ``{"input": [...], "output": [...]}``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from archer.data.formats import Context, decoded_limit, register_format
from archer.data.schema import Problem


def _json_field(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def tests_from_case_list(cases: list[dict[str, Any]], fn_name: str | None = None) -> dict[str, Any]:
    """``[{"input": x, "output": y}, ...]`` (x, y strings or ``{"stdin"}``/``{"stdout"}``) -> tests dict."""
    inputs, outputs = [], []
    for case in cases:
        inp, out = case["input"], case["output"]
        inputs.append(inp["stdin"] if isinstance(inp, dict) else inp)
        outputs.append(out["stdout"] if isinstance(out, dict) else out)
    tests: dict[str, Any] = {"inputs": inputs, "outputs": outputs}
    if fn_name:
        tests["fn_name"] = fn_name
    return tests


def normalize_tests(obj: Any, fn_name: str | None = None) -> dict[str, Any]:
    """Any of the published test encodings -> ``{"inputs", "outputs", "fn_name"?}``."""
    if isinstance(obj, (str, bytes)):
        obj = json.loads(obj)
    if isinstance(obj, dict) and "input_output" in obj:
        obj = _json_field(obj["input_output"])
    if isinstance(obj, dict) and isinstance(obj.get("tests"), list) and "inputs" not in obj:
        obj = obj["tests"]  # decode_lcb_tests wraps a case list as {"tests": [...]}
    if isinstance(obj, list):
        return tests_from_case_list(obj, fn_name)
    if isinstance(obj, dict) and {"inputs", "outputs"} <= obj.keys():
        if len(obj["inputs"]) != len(obj["outputs"]):
            raise ValueError(f"{len(obj['inputs'])} test inputs but {len(obj['outputs'])} outputs")
        tests = {"inputs": list(obj["inputs"]), "outputs": list(obj["outputs"])}
        name = fn_name or obj.get("fn_name")
        if name:
            tests["fn_name"] = name
        return tests
    raise ValueError(f"unrecognised test encoding: {type(obj).__name__}")


def _decode_compressed(blob: str, ctx: Context | None = None) -> Any:
    try:
        from archer.sandbox.zygote.safe_pickle import decode_lcb_tests
    except ImportError as exc:  # pragma: no cover - the sandbox helper ships it
        raise ImportError("compressed LiveCodeBench tests need archer.sandbox.zygote.safe_pickle") from exc
    if ctx is None:
        return decode_lcb_tests(blob)
    if ctx.inflate_left[0] < 0:  # one budget for the whole file, not one per row
        ctx.inflate_left[0] = decoded_limit(ctx.path)
    return decode_lcb_tests(blob, budget=ctx.inflate_left)


def _decode_test_blob(blob: Any, ctx: Context | None = None) -> Any:
    """Plain JSON, or base64(zlib(pickle)) decoded by the restricted unpickler (within the file's
    inflate budget when ``ctx`` is given)."""
    if not isinstance(blob, str):
        return blob
    text = blob.lstrip()
    if text.startswith(("[", "{")):
        return json.loads(text)
    return _decode_compressed(blob, ctx)


def _labels(row: dict[str, Any]) -> dict[str, Any]:
    labels = _json_field(row.get("labels")) or {}
    return labels if isinstance(labels, dict) else {}


def _between(text: str, start: str, ends: tuple[str, ...]) -> str | None:
    if start not in text:
        return None
    body = text.split(start, 1)[1]
    for end in ends:
        body = body.split(end, 1)[0]
    return body.strip() or None


def _merge(a: dict[str, Any] | None, b: dict[str, Any]) -> dict[str, Any]:
    if not a:
        return b
    merged = {"inputs": a["inputs"] + b["inputs"], "outputs": a["outputs"] + b["outputs"]}
    name = a.get("fn_name") or b.get("fn_name")
    if name:
        merged["fn_name"] = name
    return merged


# ------------------------------------------------------------------ HumanEval


def _detect_humaneval(row: dict[str, Any]) -> bool:
    return {"prompt", "test", "entry_point"} <= row.keys() and "def check" in str(row["test"])


def _convert_humaneval(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    entry = row["entry_point"]
    if not isinstance(entry, str) or not entry.isidentifier():
        raise ValueError(f"entry_point must be an identifier, got {entry!r}")
    test = f"{row['test'].rstrip()}\n\n\ncheck({entry})\n"
    source = ctx.data_source or "humaneval"
    meta = {k: v for k, v in row.items() if k not in ("prompt", "test")}
    if row.get("canonical_solution"):
        meta["solution"] = row["prompt"] + row["canonical_solution"]
    pid = row.get("task_id", index)
    from archer.data.schema import with_prompt_setup

    # the prompt's helpers (HumanEval/32's poly, ...) reach the judge as trusted setup, never from the program
    tests = with_prompt_setup({"assert": test, "entry_point": entry}, row["prompt"])
    return Problem(str(pid), row["prompt"], "code", tests=tests, data_source=source, meta=meta)


# ----------------------------------------------------------------------- MBPP

_CALL = re.compile(r"assert\s*\(?\s*(?:not\s+)?(?:\w+\()*?([A-Za-z_]\w*)\s*\(")


def _mbpp_entry_point(first_assert: str, solution: str | None) -> str | None:
    # a function the reference defines and the assert calls; else the first call in the assert
    for name in re.findall(r"^def\s+([A-Za-z_]\w*)", solution or "", flags=re.M):
        if re.search(rf"\b{name}\s*\(", first_assert):
            return name
    match = _CALL.search(first_assert)
    return match.group(1) if match else None


def _detect_mbpp(row: dict[str, Any]) -> bool:
    return isinstance(row.get("test_list"), list)


def _convert_mbpp(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    text = row.get("content") or row.get("text") or row.get("prompt")
    asserts = [str(t) for t in row["test_list"]]
    if not text or not asserts:
        raise ValueError("an MBPP row needs 'content' (or 'text') and a non-empty 'test_list'")
    labels = _labels(row)
    setup = row.get("test_setup_code") or labels.get("test_setup_code") or ""
    solution = row.get("canonical_solution") or row.get("code")
    entry = _mbpp_entry_point(asserts[0], solution)
    prompt = f"{text.strip()}\nYour code should pass these tests:\n\n" + "\n".join(asserts)
    # one test per assert (the sandbox counts each list element as a test), setup code before each
    tests: dict[str, Any] = {"assert": [f"{setup.strip()}\n{a}\n".lstrip() for a in asserts]}
    if entry:
        tests["entry_point"] = entry
    meta = {k: v for k, v in row.items() if k not in ("content", "text", "test_list")}
    if solution:
        meta["solution"] = solution
    source = ctx.data_source or "mbpp"
    pid = row.get("task_id", row.get("id", index))
    return Problem(f"{source}/{pid}", prompt, "code", tests=tests, data_source=source, meta=meta)


# -------------------------------------------------------------- LiveCodeBench


def _detect_lcb(row: dict[str, Any]) -> bool:
    if "question_content" in row and ("private_test_cases" in row or "public_test_cases" in row):
        return True
    test = row.get("test")
    if "content" in row and isinstance(test, str) and not test.lstrip().startswith(("[", "{")):
        return True
    return "livecodebench" in str(row.get("data_source", "")).lower() or "leetcode/" in str(row.get("labels"))


def _convert_lcb(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    source = ctx.data_source or "livecodebench"
    metadata = _json_field(row.get("metadata")) or {}
    fn_name = metadata.get("func_name") if isinstance(metadata, dict) else None
    meta: dict[str, Any] = {}
    if "question_content" in row:  # upstream layout: public + private tests, starter code
        tests = None
        for key in ("public_test_cases", "private_test_cases"):
            if row.get(key):
                tests = _merge(tests, normalize_tests(_decode_test_blob(row[key], ctx), fn_name))
        if tests is None:
            raise ValueError("no public_test_cases or private_test_cases")
        prompt = row["question_content"]
        if row.get("starter_code"):
            meta["starter_code"] = row["starter_code"]
        pid = row.get("question_id", index)
        meta.update(
            {k: row[k] for k in ("platform", "contest_date", "difficulty", "question_title") if k in row}
        )
    else:  # Archer sample layout: the prompt already carries the instruction and the format
        tests = normalize_tests(_decode_test_blob(row["test"], ctx), fn_name)
        prompt = row["content"]
        meta["instruction_included"] = True
        question = _between(prompt, "### Question:", ("### Format:", "### Answer:"))
        if question:
            meta["question"] = question  # the statement alone, for decontamination
        labels = _labels(row)
        meta["labels"] = labels
        pid = labels.get("task_id", row.get("id", index))
        if row.get("canonical_solution"):
            meta["solution"] = row["canonical_solution"]
    if not tests["inputs"]:
        raise ValueError("no test cases")
    meta["test_type"] = "functional" if tests.get("fn_name") else "stdin"
    return Problem(f"{source}/{pid}", prompt, "code", tests=tests, data_source=source, meta=meta)


# -------------------------------------------------------------- CodeContests


def _detect_code_contests(row: dict[str, Any]) -> bool:
    if "description" in row and "public_tests" in row:
        return True
    test = row.get("test")
    return "content" in row and isinstance(test, str) and test.lstrip().startswith("[")


def _convert_code_contests(row: dict[str, Any], index: int, ctx: Context) -> Problem:
    source = ctx.data_source or "code_contests"
    if "description" in row:
        tests = None
        for key in ("public_tests", "private_tests", "generated_tests"):
            block = _json_field(row.get(key))
            if block and block.get("input"):
                tests = _merge(tests, normalize_tests({"inputs": block["input"], "outputs": block["output"]}))
        prompt = row["description"]
        meta = {k: row[k] for k in ("name", "source", "difficulty") if k in row}
        pid = row.get("name", index)
    else:
        tests = tests_from_case_list(json.loads(row["test"]))
        prompt = row["content"]
        meta = {"labels": _labels(row)}
        pid = row.get("id", index)
    if not tests or not tests["inputs"]:
        raise ValueError("no test cases")
    return Problem(f"{source}/{pid}", prompt, "code", tests=tests, data_source=source, meta=meta)


register_format("humaneval", _detect_humaneval, _convert_humaneval, "HumanEval: prompt, test with check()")
register_format("mbpp", _detect_mbpp, _convert_mbpp, "MBPP: text/content + test_list asserts")
register_format("livecodebench", _detect_lcb, _convert_lcb, "LiveCodeBench (compressed private tests)")
register_format("code_contests", _detect_code_contests, _convert_code_contests, "CodeContests stdin/stdout")
