"""The official OpenAI Python SDK calling tools through Lambent.

Run by tests/integration/tools.rs with LAMBENT_BASE_URL, LAMBENT_KEY and
LAMBENT_MODEL set. Round 1 (whole): the model calls tools; round 2
(streamed): the SDK's own stream reassembles the calls' fragments; round 3:
the results go back as tool messages and the model answers. Prints one JSON
object with what the SDK saw.
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
tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
messages = [{"role": "user", "content": "Weather in Zürich and Oslo?"}]

whole = client.chat.completions.create(model=model, messages=messages, tools=tools)
whole_message = whole.choices[0].message
whole_calls = [
    {"id": c.id, "type": c.type, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
    for c in whole_message.tool_calls or []
]

# The SDK's helper accumulates the streamed fragments into whole calls.
with client.beta.chat.completions.stream(model=model, messages=messages, tools=tools) as stream:
    for _ in stream:
        pass
    final = stream.get_final_completion()
streamed_message = final.choices[0].message
streamed_calls = [
    {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
    for c in streamed_message.tool_calls or []
]

messages.append(whole_message.model_dump(exclude_none=True))
for call in whole_message.tool_calls or []:
    city = json.loads(call.function.arguments)["city"]
    messages.append({"role": "tool", "tool_call_id": call.id, "content": f"12 °C in {city}"})
answer = client.chat.completions.create(model=model, messages=messages, tools=tools)

print(
    json.dumps(
        {
            "whole": {
                "finish_reason": whole.choices[0].finish_reason,
                "content": whole_message.content,
                "calls": whole_calls,
            },
            "stream": {
                "finish_reason": final.choices[0].finish_reason,
                "content": streamed_message.content,
                "calls": streamed_calls,
            },
            "answer": {
                "finish_reason": answer.choices[0].finish_reason,
                "content": answer.choices[0].message.content,
            },
        }
    )
)
