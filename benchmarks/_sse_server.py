"""A tiny OpenAI chat-completions SSE server on 127.0.0.1, for the streaming benchmark.

Run as ``python -m benchmarks._sse_server``; it prints its port on stdout. The
reply's token count comes from the URL: ``POST /t<N>/v1/chat/completions``
streams N content chunks (then a finish chunk, a usage chunk and ``[DONE]``),
one HTTP/1.1 chunk per SSE event, over a keep-alive connection. Replies are
prebuilt, so the server's own cost is a constant.
"""

from __future__ import annotations

import asyncio
import json
import sys

__all__ = ["reply_events"]


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def reply_events(tokens: int) -> list[bytes]:
    """The SSE events of one streamed reply of ``tokens`` content chunks."""

    def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = [_event(chunk({"role": "assistant", "content": ""}))]
    events += [_event(chunk({"content": f"tok{i} "})) for i in range(tokens)]
    events.append(_event(chunk({}, "stop")))
    usage = {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens}
    events.append(_event({**chunk({}), "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
)


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    cache: dict[int, list[bytes]] = {}
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if length:
                await reader.readexactly(length)
            tokens = int(path.split("/")[1][1:]) if path.startswith("/t") else 20
            events = cache.get(tokens)
            if events is None:
                events = cache[tokens] = [_http_chunk(e) for e in reply_events(tokens)]
            writer.write(_HEAD)
            for e in events:  # one write per event, as a model server streams them
                writer.write(e)
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _main() -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        pass
