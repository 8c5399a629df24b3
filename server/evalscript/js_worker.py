"""The V8 side of JavaScript evalscripts: runs inside a worker process of ``js_pool.py``.

Why a separate process: a request's script is untrusted code. V8 (through mini-racer) gives
time and heap limits and no file, network or module access, and the process boundary means a
script that crashes V8 or outruns its limits costs one worker, never the server.

Each job is one message ``(kind, meta)`` on the socket. For ``evaluate`` the float64 band values
are in a file mapping shared with the parent: copied once into the V8 context's input
ArrayBuffer, and the output ArrayBuffer once back. Compiled contexts are kept per script digest.
"""

from __future__ import annotations

import json
import mmap
import os
import re
import sys
import threading
import time
import traceback
from collections import OrderedDict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from py_mini_racer import JSEvalException, JSOOMException, JSParseException, JSTimeoutException, MiniRacer

RUNTIME = (Path(__file__).parent / "js" / "runtime.js").read_text(encoding="utf-8")
ACORN = Path(__file__).parent / "js" / "vendor" / "acorn.js"
# The parser context's entry point: the script's ESTree as JSON, or null when the tree is too
# large or deep to be worth vectorising. Node offsets are dropped; the source text of each
# top-level function (also ``const f = (x) => ...``) is kept, to compare with what V8 holds
# under that name.
_PARSE = """
function __eotiler_parse(src, maxNodes, maxDepth) {
  const ast = acorn.parse(src, { ecmaVersion: "latest", sourceType: "script" });
  let nodes = 0;
  let tooBig = false;
  (function walk(node, depth) {
    if (tooBig) return;
    if (++nodes > maxNodes || depth > maxDepth) { tooBig = true; return; }
    for (const key in node) {
      const v = node[key];
      if (Array.isArray(v)) { for (const item of v) if (item && typeof item.type === "string") walk(item, depth + 1); }
      else if (v && typeof v.type === "string") walk(v, depth + 1);
    }
  })(ast, 0);
  if (tooBig) return "null";
  const functions = ["ArrowFunctionExpression", "FunctionExpression"];
  for (const node of ast.body) {
    if (node.type === "FunctionDeclaration") node.text = src.slice(node.start, node.end);
    if (node.type !== "VariableDeclaration") continue;
    for (const decl of node.declarations) {  // const f = (x) => ... : V8 prints the same text
      if (decl.init && functions.includes(decl.init.type)) decl.init.text = src.slice(decl.init.start, decl.init.end);
    }
  }
  return JSON.stringify(ast, (k, v) => (k === "start" || k === "end" || k === "regex" ? undefined : v));
}
"""
# The outline context's entry point: whether the script returns at its top level (the simple
# V1 form, also sent with a VERSION=3 header) and every identifier its code names, which is
# what a V1 script's bands are read from: comments, strings, template text, regular expressions
# and property names (``a.B08``, ``{B08: 1}``) name no band. null when acorn cannot parse it.
_OUTLINE = """
function __eotiler_outline(src) {
  let ast;
  try {
    ast = acorn.parse(src, { ecmaVersion: "latest", sourceType: "script", allowReturnOutsideFunction: true });
  } catch (e) {
    return "null";
  }
  const functions = ["FunctionDeclaration", "FunctionExpression", "ArrowFunctionExpression"];
  const keyed = ["Property", "PropertyDefinition", "MethodDefinition"];
  const names = new Set();
  let topLevelReturn = false;
  const stack = [[ast, false]];
  while (stack.length > 0) {
    const [node, inFunction] = stack.pop();
    if (node.type === "Identifier") names.add(node.name);
    if (node.type === "ReturnStatement" && !inFunction) topLevelReturn = true;
    const inner = inFunction || functions.includes(node.type);
    for (const key in node) {
      if (key === "property" && node.type === "MemberExpression" && !node.computed) continue;
      if (key === "key" && keyed.includes(node.type) && !node.computed) continue;
      if (key === "label") continue;
      const v = node[key];
      for (const item of Array.isArray(v) ? v : [v]) {
        if (item && typeof item.type === "string") stack.push([item, inner]);
      }
    }
  }
  return JSON.stringify({ topLevelReturn: topLevelReturn, names: [...names].sort() });
}
"""
PARSE_MAX_NODES = 5000
PARSE_MAX_DEPTH = 200  # a + b + c... nests one level per term
SCRIPT_URL = "evalscript.js"
CONTEXTS_PER_WORKER = 8
# Globals that reach outside the sandbox or block: removed before any user code runs.
_HARDEN = """
delete globalThis.setTimeout; delete globalThis.setInterval; delete globalThis.clearTimeout;
delete globalThis.clearInterval; delete globalThis.WebAssembly; delete globalThis.Atomics;
delete globalThis.SharedArrayBuffer;
globalThis.console = Object.freeze({log() {}, info() {}, warn() {}, error() {}, debug() {}});
"""
_LOCATION = re.compile(re.escape(SCRIPT_URL) + r":(\d+)(?::(\d+))?")


# Jobs that call one runtime function with one JSON argument: (function, meta key, whether the
# answer is JSON text to parse). ``metadata`` answers JSON text, passed on as it is.
_CALLS = {
    "probe": ("__eotiler_probe", "names", False),
    "preprocess": ("__eotiler_preprocess", "scenes_meta", True),
    "metadata": ("__eotiler_output_metadata", "scenes_meta", False),
}


class ScriptFailure(Exception):
    """A script error to report to the client: ``kind`` is syntax, runtime, timeout or memory."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def describe(exc: Exception) -> ScriptFailure:
    """Turn a mini-racer exception into the message a script author needs: error and line."""
    if isinstance(exc, JSTimeoutException):
        return ScriptFailure("timeout", "evalscript exceeded its time limit")
    if isinstance(exc, JSOOMException):
        return ScriptFailure("memory", "evalscript exceeded its memory limit")
    text = str(exc)
    kind = "syntax" if isinstance(exc, JSParseException) else "runtime"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    error = next((line for line in lines if re.match(r"^[A-Za-z]*Error\b|^Uncaught\b", line)), None)
    if error is None:
        error = next((line.split(": ", 2)[-1] for line in lines if "Error" in line), lines[0] if lines else "error")
    where = _LOCATION.search(text)
    line_info = f" (line {where.group(1)})" if where else ""
    return ScriptFailure(kind, f"{error[:300]}{line_info}")


def wrap_v1(source: str, band_names: list[str]) -> str:
    """A V1 script (bands as globals, top-level ``return``) as a V3 ``evaluatePixel``.

    The body starts on the wrapper's first line, so error line numbers point into the user's text.
    """
    unpack = " ".join(f"var {name} = samples.{name};" for name in band_names)
    return (
        f"function __v1(samples) {{ {unpack} {source}\n}}\nfunction evaluatePixel(samples) {{ return __v1(samples); }}"
    )


class Context:
    """One compiled script in one V8 isolate, with the buffers it shares with Python."""

    def __init__(self, source: str, heap_bytes: int, timeout: float) -> None:
        self.racer = MiniRacer()
        self.racer.set_hard_memory_limit(heap_bytes)
        self.racer.eval(_HARDEN)
        self.racer.eval(RUNTIME + "\n//# sourceURL=eotiler-runtime.js")
        self.racer.eval(source + f"\n//# sourceURL={SCRIPT_URL}", timeout_sec=timeout)
        self.inputs: memoryview | None = None
        self.outputs: memoryview | None = None

    def buffers(self, in_length: int, out_length: int) -> tuple[memoryview, memoryview]:
        """Float64 input/output buffers of the given lengths, reused while they fit exactly."""
        need_in, need_out = in_length * 8, out_length * 8
        if self.inputs is None or len(self.inputs) != need_in or self.outputs is None or len(self.outputs) != need_out:
            self.racer.eval(f"__eotiler_buffers({in_length}, {out_length})")
            self.inputs = self.racer.eval("__in.buffer")
            self.outputs = self.racer.eval("__out.buffer")
        assert self.inputs is not None and self.outputs is not None
        return self.inputs, self.outputs

    def close(self) -> None:
        """Free the isolate."""
        self.inputs = self.outputs = None
        self.racer.close()


class Worker:
    """The job loop of one worker process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.contexts: OrderedDict[str, Context] = OrderedDict()
        self.buffer: mmap.mmap | None = None
        self.parser: MiniRacer | None = None

    def parse(self, meta: dict[str, Any]) -> Any:
        """The script's ESTree (acorn, in a context of its own that never runs the script).

        A V1 script is parsed as V8 runs it: wrapped into ``evaluatePixel`` (``wrap_v1``).
        """
        source = meta["source"]
        if meta.get("v1_bands") is not None:
            source = wrap_v1(source, meta["v1_bands"])
        return self.acorn(f"__eotiler_parse({json.dumps(source)}, {PARSE_MAX_NODES}, {PARSE_MAX_DEPTH})", meta)

    def outline(self, meta: dict[str, Any]) -> Any:
        """``{topLevelReturn, names}`` of the script as written (``_OUTLINE``), or None."""
        return self.acorn(f"__eotiler_outline({json.dumps(meta['source'])})", meta)

    def acorn(self, call: str, meta: dict[str, Any]) -> Any:
        """Run ``call`` in the parser context; None when it fails or outruns its limits."""
        if self.parser is None:
            self.parser = MiniRacer()
            self.parser.set_hard_memory_limit(meta["heap_bytes"])
            self.parser.eval(_HARDEN)
            self.parser.eval(ACORN.read_text(encoding="utf-8") + _PARSE + _OUTLINE)
        try:
            return json.loads(self.parser.eval(call, timeout_sec=meta["timeout"]))
        except (JSEvalException, JSTimeoutException, JSOOMException, RecursionError):
            self.parser.close()  # a failed parse may have left the context in any state
            self.parser = None
            return None

    def context(self, meta: dict[str, Any]) -> Context:
        """The compiled context of the job's script, created (and the oldest evicted) on first use."""
        digest = meta["digest"]
        found = self.contexts.get(digest)
        if found is not None:
            self.contexts.move_to_end(digest)
            return found
        source = meta["source"]
        if meta.get("v1_bands") is not None:
            source = wrap_v1(source, meta["v1_bands"])
        created = Context(source, meta["heap_bytes"], meta["timeout"])
        self.contexts[digest] = created
        while len(self.contexts) > CONTEXTS_PER_WORKER:
            self.contexts.popitem(last=False)[1].close()
        return created

    def shared(self, meta: dict[str, Any]) -> memoryview:
        """The parent's buffer for band values; a job names a new file when the buffer grew.

        A job whose values came inline (no room for a shared file) gets a private buffer
        holding them, with room for the results that go back in the answer.
        """
        if "inline" in meta:
            return memoryview(bytearray(meta["inline"]) + bytearray(meta["out_length"] * 8))
        path = meta.get("shm_path")
        if path is not None:  # the old mapping is unmapped once no view of it is left
            with open(path, "r+b") as handle:  # noqa: PTH123
                self.buffer = mmap.mmap(handle.fileno(), meta["shm_size"])
        assert self.buffer is not None
        return memoryview(self.buffer)

    def drop(self, digest: str) -> None:
        """Forget a context whose state may be broken (after a timeout or out-of-memory)."""
        found = self.contexts.pop(digest, None)
        if found is not None:
            found.close()

    def evaluate(self, meta: dict[str, Any]) -> bytes | None:
        """``evaluatePixel`` over the job's pixels: values in and out through the shared buffer
        (the results in the answer when they came inline)."""
        shared = self.shared(meta)
        ctx = self.context(meta)
        inputs, outputs = ctx.buffers(meta["in_length"], meta["out_length"])
        start = meta["in_bytes"]
        inputs[:] = shared[:start]
        call = f"__eotiler_evaluate({json.dumps(json.dumps(meta['eval_meta']))})"
        ctx.racer.eval(call, timeout_sec=meta["timeout"])
        shared[start : start + len(outputs)] = outputs
        return bytes(shared[start:]) if "inline" in meta else None

    def answer(self, kind: str, meta: dict[str, Any]) -> Any:
        """What the job ``kind`` answers (raises what the script raised)."""
        if kind == "parse":
            return self.parse(meta)
        if kind == "outline":
            return self.outline(meta)
        if kind == "evaluate":
            return self.evaluate(meta)
        racer = self.context(meta).racer
        if kind == "setup":
            answer = json.loads(racer.eval("__eotiler_setup()", timeout_sec=meta["timeout"]))
            if meta.get("globals") is not None:
                call = f"__eotiler_globals({json.dumps(json.dumps(meta['globals']))})"
                answer["globals"] = json.loads(racer.eval(call, timeout_sec=meta["timeout"]))
            return answer
        function, argument, parsed = _CALLS[kind]
        answer = racer.eval(f"{function}({json.dumps(json.dumps(meta[argument]))})", timeout_sec=meta["timeout"])
        return json.loads(answer) if parsed else answer

    def run(self) -> None:
        """Answer jobs until the parent closes the socket."""
        while True:
            try:
                kind, meta = self.conn.recv()
            except (EOFError, OSError):
                return
            try:
                answer = self.answer(kind, meta)
            except (JSEvalException, JSTimeoutException, JSOOMException) as exc:
                failure = describe(exc)
                if failure.kind in ("timeout", "memory"):
                    self.drop(meta["digest"])
                self.conn.send(("error", failure.kind, failure.message))
                continue
            except Exception as exc:  # noqa: BLE001 - the worker must answer every job
                self.drop(meta.get("digest", ""))
                self.conn.send(("error", "runtime", f"{type(exc).__name__}: {str(exc)[:300]}"))
                continue
            self.conn.send(("ok", answer))


PARENT_CHECK_SECONDS = 1.0


def _end_with_parent(parent: int) -> None:
    """Exit as soon as the process that started this worker is gone (reparented to another).

    Why: a server killed outright (SIGKILL, the OOM killer) never stops its workers, and a worker
    inside a long job would only notice when it next answers.
    """
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)


def main() -> None:
    """Entry point of a worker process: ``python -m server.evalscript.js_worker <socket fd>``.

    The process ends with ``os._exit``: nothing is left to flush (the parent owns the shared
    buffer files), and mini-racer can deadlock freeing its contexts during interpreter
    finalization, which left workers hanging forever after their parent had gone.
    """
    threading.Thread(target=_end_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        Worker(Connection(int(sys.argv[1]))).run()
    except BaseException:  # noqa: BLE001 - reported, then the same exit as any other end
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
