"""Chat back-ends for the optional LLM steps (keyword extraction, answer judging).

A *chat function* is any callable ``chat(messages) -> str`` where ``messages`` is an OpenAI-style list of
``{"role": "system"|"user"|"assistant", "content": str}``. Tests inject a stub; real runs use
:func:`openai_chat` (any OpenAI-compatible ``/chat/completions`` endpoint: vLLM, Ollama, LM Studio, a hosted API)
or :func:`transformers_chat` (a local causal LM folder, loaded with ``local_files_only=True``: nothing downloads).
Prompts live as text files in ``attok_monai/vqa/prompts/`` and are filled with :func:`render_prompt`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ChatFn", "openai_chat", "transformers_chat", "load_prompt", "render_prompt", "parse_json_response"]

ChatFn = Callable[[list[dict[str, str]]], str]


def load_prompt(name: str, prompts_dir: str | os.PathLike | None = None) -> str:
    """Text of prompt ``name`` (``"propose"``, ``"merge"``, ``"assign"``, ``"judge"``) from ``prompts_dir`` or the
    package's ``prompts/`` folder."""
    fname = name if name.endswith(".txt") else f"{name}.txt"
    if prompts_dir is not None:
        p = Path(prompts_dir) / fname
        if not p.is_file():
            raise FileNotFoundError(f"load_prompt: {p} not found.")
        return p.read_text(encoding="utf-8")
    return resources.files("attok_monai.vqa").joinpath("prompts", fname).read_text(encoding="utf-8")


def render_prompt(template: str, **values: Any) -> str:
    """Fill ``$name`` placeholders (``string.Template``; JSON braces in the prompt need no escaping)."""
    return string.Template(template).safe_substitute({k: str(v) for k, v in values.items()})


def prompt_hash(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def parse_json_response(text: str) -> Any:
    """Parse the first JSON list/object in an LLM reply (tolerates ```json fences and chatter); None if none."""
    text = re.sub(r"```(?:json)?", "", text)
    for open_c, close_c in (("[", "]"), ("{", "}")):
        start = text.find(open_c)
        end = text.rfind(close_c)
        if start >= 0 and end > start:
            try:
                return json.loads(text[start : end + 1])
            except json.JSONDecodeError:
                continue
    return None


def openai_chat(
    base_url: str,
    model: str,
    api_key: str | None = None,
    timeout: float = 120.0,
    temperature: float = 0.0,
    max_tokens: int = 512,
    extra_body: Mapping[str, Any] | None = None,
) -> ChatFn:
    """A chat function POSTing to ``{base_url}/chat/completions`` (OpenAI-compatible) with ``urllib``.

    ``api_key`` defaults to ``$OPENAI_API_KEY`` when set (never logged). Errors name the URL and the HTTP status.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")

    def chat(messages: list[dict[str, str]]) -> str:
        body = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        body.update(extra_body or {})
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"openai_chat: {url} answered HTTP {e.code}: {e.reason}") from e
        except (urllib.error.URLError, TimeoutError) as e:
            raise RuntimeError(f"openai_chat: cannot reach {url}: {e}") from e
        try:
            return data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"openai_chat: unexpected reply from {url}: no choices[0].message.content") from e

    chat.model_name = model  # type: ignore[attr-defined]
    return chat


def transformers_chat(model_path: str | os.PathLike, max_new_tokens: int = 256, device: str | None = None) -> ChatFn:
    """A chat function over a local ``transformers`` causal LM folder (``local_files_only=True``), greedy decoding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(dev).eval()

    def chat(messages: list[dict[str, str]]) -> str:
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\nassistant:"
        enc = tok(prompt, return_tensors="pt").to(dev)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        return tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    chat.model_name = Path(model_path).name  # type: ignore[attr-defined]
    return chat
