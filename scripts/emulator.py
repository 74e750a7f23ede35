#!/usr/bin/env python3
"""The AWS emulator of the test suite: moto's server, with two fixes.

Real DynamoDB applies each write to an item atomically (an `ADD` never loses
a concurrent `ADD`). moto's threaded server does not: two concurrent updates of
one item can read the same old value. So DynamoDB requests are served one at a
time here; every other service (SQS long polls above all) stays concurrent.

Real DynamoDB stores a number in canonical form: an `ADD` that brings
0.0016 back to zero stores 0. moto keeps Python's `0E-8`, which its own next
`ADD` then cannot parse. Numbers are canonicalised here as DynamoDB does.

Usage: emulator.py [-H HOST] [-p PORT]   (what `moto_server` takes)
"""

import argparse
import threading

from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple

try:  # moto's handler quiets its access log; optional across versions
    from moto.server import MotoRequestHandler as RequestHandler
except ImportError:  # pragma: no cover
    RequestHandler = None


def canonical_numbers():
    from decimal import Decimal

    from moto.dynamodb.models import dynamo_type

    original = dynamo_type.DynamoType.__init__

    def init(self, type_as_dict):
        original(self, type_as_dict)
        if self.type == "N" and isinstance(self.value, str) and "E" in self.value.upper():
            self.value = format(Decimal(self.value).normalize(), "f")

    dynamo_type.DynamoType.__init__ = init


def serialise_dynamodb(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with lock:
                # Materialise the body inside the lock: moto's work happens here.
                return list(app(environ, start_response))
        return app(environ, start_response)

    return wrapped


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    canonical_numbers()
    app = DomainDispatcherApplication(create_backend_app)
    extra = {"request_handler": RequestHandler} if RequestHandler else {}
    run_simple(args.host, args.port, serialise_dynamodb(app), threaded=True, **extra)


if __name__ == "__main__":
    main()
