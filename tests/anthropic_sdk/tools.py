"""The official Anthropic Python SDK against Lambent's /v1/messages.

Run by tests/integration/tools.rs with LAMBENT_BASE_URL, LAMBENT_KEY and
LAMBENT_MODEL set. Round 1 (whole): the model calls tools; round 2
(streamed): the SDK's stream helper rebuilds the same message from the
events; round 3: the results go back as tool_result blocks and the model
answers; then a refused request. Prints one JSON object with what the SDK saw.
"""

import json
import os

import anthropic

client = anthropic.Anthropic(
    base_url=os.environ["LAMBENT_BASE_URL"],
    api_key=os.environ["LAMBENT_KEY"],
    max_retries=0,
    timeout=30,
)
model = os.environ["LAMBENT_MODEL"]
tools = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
messages = [{"role": "user", "content": "Weather in Zürich and Oslo?"}]


def blocks(message):
    out = []
    for block in message.content:
        if block.type == "text":
            out.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            out.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
    return out


def usage(message):
    u = message.usage
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
    }


whole = client.messages.create(model=model, max_tokens=200, messages=messages, tools=tools)

with client.messages.stream(model=model, max_tokens=200, messages=messages, tools=tools) as stream:
    events = [event.type for event in stream]
    streamed = stream.get_final_message()

messages.append({"role": "assistant", "content": blocks(whole)})
messages.append(
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": b.id, "content": f"12 °C in {b.input['city']}"}
            for b in whole.content
            if b.type == "tool_use"
        ],
    }
)
answer = client.messages.create(model=model, max_tokens=200, messages=messages, tools=tools)

try:
    client.messages.create(model="nobody/nothing", max_tokens=10, messages=messages)
    refused = None
except anthropic.BadRequestError as e:
    refused = {"status": e.status_code, "type": e.body["error"]["type"] if isinstance(e.body, dict) else None}

print(
    json.dumps(
        {
            "whole": {
                "type": whole.type,
                "role": whole.role,
                "stop_reason": whole.stop_reason,
                "content": blocks(whole),
                "usage": usage(whole),
            },
            "stream": {
                "stop_reason": streamed.stop_reason,
                "content": blocks(streamed),
                "usage": usage(streamed),
                "events": events,
            },
            "answer": {"stop_reason": answer.stop_reason, "content": blocks(answer)},
            "refused": refused,
        }
    )
)
