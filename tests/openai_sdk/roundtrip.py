"""The official OpenAI Python SDK against Lambent's /v1/chat/completions.

Run by tests/integration/openai_sdk.rs with LAMBENT_BASE_URL, LAMBENT_KEY and
LAMBENT_MODEL set; prints one JSON object with what the SDK saw, which the
Rust test checks against the fake provider's script.
"""

import json
import os

import openai

client = openai.OpenAI(
    base_url=os.environ["LAMBENT_BASE_URL"],
    api_key=os.environ["LAMBENT_KEY"],
    max_retries=0,
    timeout=30,
)
model = os.environ["LAMBENT_MODEL"]
messages = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "Say something."},
]

whole = client.chat.completions.create(model=model, messages=messages, max_tokens=50)

deltas = []
usage = None
chunks = 0
finish = None
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    chunks += 1
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            deltas.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason

try:
    client.chat.completions.create(model="nobody/nothing", messages=messages)
    refused = None
except openai.BadRequestError as e:
    refused = {"status": e.status_code, "code": e.body.get("code") if isinstance(e.body, dict) else None}

print(
    json.dumps(
        {
            "whole": {
                "id": whole.id,
                "object": whole.object,
                "model": whole.model,
                "text": whole.choices[0].message.content,
                "role": whole.choices[0].message.role,
                "finish_reason": whole.choices[0].finish_reason,
                "prompt_tokens": whole.usage.prompt_tokens,
                "completion_tokens": whole.usage.completion_tokens,
                "total_tokens": whole.usage.total_tokens,
                "cached_tokens": whole.usage.prompt_tokens_details.cached_tokens,
            },
            "stream": {
                "deltas": deltas,
                "chunks": chunks,
                "finish_reason": finish,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "cached_tokens": usage.prompt_tokens_details.cached_tokens if usage else None,
            },
            "refused": refused,
        }
    )
)
