"""template.yaml, expanded offline as CloudFormation would expand it.

The Serverless transform is the SAM translator's (no AWS call: managed
policies are named by ARN, and the code is a placeholder S3 URI as after
`sam package`); conditions, parameters and the one use of
AWS::LanguageExtensions (Fn::If in DeletionPolicy) are applied as
CloudFormation applies them. The checks read the expanded resources, so they hold for what
a deploy creates, not for how the template happens to be written.

Run with the venv of scripts/test (it has aws-sam-cli):
    ~/.cache/lambent/venv/bin/python -m unittest discover -s tests/template -v
"""

import copy
import json
import os
import pathlib
import re
import unittest

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")

from samcli.commands.deploy.auth_utils import auth_per_resource  # noqa: E402
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider  # noqa: E402
from samcli.yamlhelper import yaml_parse  # noqa: E402
from samtranslator.translator.transform import transform  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"

# The only routes without the API key authorizer.
PUBLIC_ROUTES = {("get", "/health"), ("get", "/openapi.json")}
# The chat function's routes, which stream.
STREAMED_ROUTES = {
    ("post", "/v1/sessions/{id}/messages"),
    ("get", "/v1/sessions/{id}/messages/{message_id}/events"),
    ("post", "/v1/chat/completions"),
    ("post", "/v1/messages"),
}
# Managed policies SAM attaches by itself: CloudWatch Logs for every function,
# X-Ray for active tracing (PutTraceSegments has no resource-level permission).
SAM_MANAGED_POLICIES = {
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}


class _NoManagedPolicyLookups:
    def load(self):
        return {}


NO_VALUE = object()


def resolve(value, parameters, conditions):
    """What CloudFormation makes of Fn::If and of Refs to parameters."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in parameters:
            return parameters[value["Ref"]]
        if set(value) == {"Ref"} and value["Ref"] == "AWS::NoValue":
            return NO_VALUE
        if set(value) == {"Fn::If"}:
            condition, then, otherwise = value["Fn::If"]
            return resolve(then if conditions[condition] else otherwise, parameters, conditions)
        out = {}
        for key, inner in value.items():
            inner = resolve(inner, parameters, conditions)
            if inner is not NO_VALUE:
                out[key] = inner
        return out
    if isinstance(value, list):
        return [v for v in (resolve(i, parameters, conditions) for i in value) if v is not NO_VALUE]
    return value


def evaluate(expression, parameters, conditions):
    if isinstance(expression, dict):
        (function, args), = expression.items()
        if function == "Fn::Equals":
            left, right = (evaluate(a, parameters, conditions) for a in args)
            return str(left) == str(right)
        if function == "Fn::Not":
            return not evaluate(args[0], parameters, conditions)
        if function == "Fn::And":
            return all(evaluate(a, parameters, conditions) for a in args)
        if function == "Fn::Or":
            return any(evaluate(a, parameters, conditions) for a in args)
        if function == "Condition":
            return conditions[args]
        if function == "Ref":
            return parameters[args]
        raise ValueError(f"condition function {function} not handled here")
    return expression


def expand(**given):
    """The template as CloudFormation would deploy it with these parameters.

    The AWS::LanguageExtensions transform is used here only for Fn::If in
    DeletionPolicy and UpdateReplacePolicy: resolved as it resolves them.
    Then the SAM translator, then conditions and parameters as CloudFormation
    applies them. (SAM CLI's own local language-extensions processor is not
    used: it turns an Fn::Sub it cannot fully resolve into a plain string.)
    """
    template = yaml_parse(TEMPLATE.read_text())
    parameters = {}
    for name, spec in template["Parameters"].items():
        value = given.pop(name, spec.get("Default"))
        parameters[name] = int(value) if spec["Type"] == "Number" else value
    assert not given, f"no such parameters: {given}"
    conditions = {}
    for name, expression in template["Conditions"].items():
        conditions[name] = evaluate(expression, parameters, conditions)

    assert template["Transform"] == ["AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"]
    template["Transform"] = "AWS::Serverless-2016-10-31"
    for resource in template["Resources"].values():
        for policy in ("DeletionPolicy", "UpdateReplacePolicy"):
            if policy in resource:
                resource[policy] = resolve(resource[policy], parameters, conditions)
        if resource.get("Type") == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
    out = transform(template, dict(parameters), _NoManagedPolicyLookups())
    out["Resources"] = {
        name: resolve(r, parameters, conditions)
        for name, r in out["Resources"].items()
        if conditions.get(r.get("Condition"), True)
    }
    return out


def of_type(resources, kind):
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def refs(value):
    """Every logical ID a value refers to (Ref, Fn::GetAtt, Fn::Sub)."""
    found = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add(inner[0] if isinstance(inner, list) else inner.split(".")[0])
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                local = inner[1] if isinstance(inner, list) else {}
                found.update(
                    m.split(".")[0]
                    for m in re.findall(r"\$\{([^}!]+)\}", text)
                    if m not in local
                )
                found.update(refs(local))
            else:
                found.update(refs(inner))
    elif isinstance(value, list):
        for inner in value:
            found.update(refs(inner))
    return found


class DefaultDeploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.resources = expand()["Resources"]
        apis = of_type(cls.resources, "AWS::ApiGateway::RestApi")
        assert len(apis) == 1, apis
        cls.api = next(iter(apis.values()))["Properties"]["Body"]

    def routes(self):
        for path, item in self.api["paths"].items():
            for method, operation in item.items():
                method = "any" if method == "x-amazon-apigateway-any-method" else method
                yield method, path, operation

    def function_of(self, operation):
        uri = operation["x-amazon-apigateway-integration"]["uri"]
        return next(iter(refs(uri) - {"AWS::Region"}))

    def test_one_front_door(self):
        # No function URL, no HTTP API: every route is on the REST API.
        for kind in ("AWS::Lambda::Url", "AWS::ApiGatewayV2::Api"):
            self.assertEqual(of_type(self.resources, kind), {}, kind)
        routed = {self.function_of(op) for m, _, op in self.routes() if m != "options"}
        http_functions = {
            name
            for name, r in of_type(self.resources, "AWS::Lambda::Function").items()
            if name not in ("AuthorizerFunction", "WorkerFunction", "SweeperFunction", "TriggerFunction")
        }
        self.assertEqual(routed, http_functions)

    def test_every_route_but_the_public_two_has_the_authorizer(self):
        schemes = self.api["components"]["securitySchemes"]
        seen_public = set()
        for method, path, operation in self.routes():
            security = [name for entry in operation.get("security", []) for name in entry]
            if method == "options":
                # A browser's preflight, answered by API Gateway itself.
                self.assertEqual(operation["x-amazon-apigateway-integration"]["type"], "mock")
                self.assertEqual(security, [], path)
                continue
            if (method, path) in PUBLIC_ROUTES:
                self.assertEqual(security, ["NONE"], f"{method} {path}")
                seen_public.add((method, path))
                continue
            self.assertEqual(len(security), 1, f"{method} {path}: {security}")
            scheme = schemes[security[0]]["x-amazon-apigateway-authorizer"]
            self.assertEqual(scheme["type"], "request", f"{method} {path}")
            self.assertEqual(
                refs(scheme["authorizerUri"]) - {"AWS::Region"}, {"AuthorizerFunction"}
            )
        self.assertEqual(seen_public, PUBLIC_ROUTES)

    def test_the_chat_routes_stream(self):
        streamed = set()
        for method, path, operation in self.routes():
            if method == "options":
                continue
            integration = operation["x-amazon-apigateway-integration"]
            uri = json.dumps(integration["uri"])
            if integration.get("responseTransferMode") == "STREAM":
                streamed.add((method, path))
                self.assertEqual(self.function_of(operation), "ChatFunction")
                self.assertIn("/2021-11-15/functions/", uri)
                self.assertIn("/response-streaming-invocations", uri)
                # Longer than the chat function's own stream deadline (270 s).
                self.assertGreaterEqual(integration["timeoutInMillis"], 270_000)
            else:
                self.assertNotIn("response-streaming", uri, f"{method} {path}")
        self.assertEqual(streamed, STREAMED_ROUTES)

    def test_refusals_come_in_lambents_error_envelope(self):
        responses = self.api["x-amazon-apigateway-gateway-responses"]
        statuses = {
            "UNAUTHORIZED": "401",
            "ACCESS_DENIED": "403",
            "AUTHORIZER_FAILURE": "503",
            "THROTTLED": "429",
            "WAF_FILTERED": "403",
            "MISSING_AUTHENTICATION_TOKEN": "404",
            "DEFAULT_4XX": None,
            "DEFAULT_5XX": None,
        }
        self.assertEqual(set(responses), set(statuses))
        for kind, status in statuses.items():
            self.assertEqual(responses[kind].get("statusCode"), status, kind)
            template = responses[kind]["responseTemplates"]["application/json"]
            # As API Gateway fills it in: messageString is a quoted JSON string.
            body = template.replace(
                "$context.error.messageString", json.dumps('Invalid "x" header')
            ).replace("$context.requestId", "c6af9ac6-7b61")
            error = json.loads(body)["error"]
            self.assertEqual(set(error), {"code", "message", "request_id"}, kind)
            self.assertEqual(error["request_id"], "c6af9ac6-7b61", kind)
        unauthorized = json.loads(
            responses["UNAUTHORIZED"]["responseTemplates"]["application/json"]
        )["error"]
        self.assertEqual(unauthorized["code"], "unauthenticated")
        throttled = responses["THROTTLED"]["responseParameters"]
        self.assertIn("gatewayresponse.header.Retry-After", throttled)

    def test_the_stage_is_throttled_traced_and_logged(self):
        (stage,) = of_type(self.resources, "AWS::ApiGateway::Stage").values()
        props = stage["Properties"]
        (settings,) = props["MethodSettings"]
        self.assertEqual((settings["ResourcePath"], settings["HttpMethod"]), ("/*", "*"))
        self.assertGreater(settings["ThrottlingRateLimit"], 0)
        self.assertGreater(settings["ThrottlingBurstLimit"], 0)
        self.assertTrue(props["TracingEnabled"])
        access = props["AccessLogSetting"]
        self.assertIn("$context.authorizer.error", access["Format"])
        self.assertIn("$context.integration.requestId", access["Format"])
        self.assertIn("$context.xrayTraceId", access["Format"])

    def test_every_function_is_capped_traced_and_logs_json(self):
        functions = of_type(self.resources, "AWS::Lambda::Function")
        self.assertEqual(len(functions), 14)
        for name, function in functions.items():
            props = function["Properties"]
            self.assertIn("ReservedConcurrentExecutions", props, name)
            self.assertEqual(props["TracingConfig"], {"Mode": "Active"}, name)
            self.assertEqual(props["LoggingConfig"]["LogFormat"], "JSON", name)
        self.assertEqual(functions["SweeperFunction"]["Properties"]["ReservedConcurrentExecutions"], 1)

    def test_every_event_source_has_a_maximum_concurrency(self):
        mappings = of_type(self.resources, "AWS::Lambda::EventSourceMapping")
        self.assertEqual(len(mappings), 2)
        for name, mapping in mappings.items():
            self.assertGreaterEqual(
                mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"], 2, name
            )

    def test_every_dead_letter_queue_has_an_alarm(self):
        queues = of_type(self.resources, "AWS::SQS::Queue")
        dead_letter_queues = {
            next(iter(refs(q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])))
            for q in queues.values()
            if "RedrivePolicy" in q["Properties"]
        }
        self.assertEqual(dead_letter_queues, {"StepsDeadLetterQueue", "TriggersDeadLetterQueue"})
        alarms = of_type(self.resources, "AWS::CloudWatch::Alarm").values()
        for queue in dead_letter_queues:
            watching = [
                a["Properties"]
                for a in alarms
                if a["Properties"].get("Namespace") == "AWS/SQS"
                and a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
                and queue in refs(a["Properties"]["Dimensions"])
            ]
            self.assertEqual(len(watching), 1, queue)
            self.assertEqual(watching[0]["Threshold"], 0)
            self.assertEqual(watching[0]["ComparisonOperator"], "GreaterThanThreshold")

    def test_every_alarm_notifies_the_topic_and_every_function_has_its_alarms(self):
        alarms = of_type(self.resources, "AWS::CloudWatch::Alarm")
        for name, alarm in alarms.items():
            self.assertEqual(refs(alarm["Properties"]["AlarmActions"]), {"AlarmTopic"}, name)
        for function in of_type(self.resources, "AWS::Lambda::Function"):
            for metric in ("Errors", "Throttles"):
                self.assertTrue(
                    any(
                        a["Properties"].get("MetricName") == metric
                        and function in refs(a["Properties"]["Dimensions"])
                        for a in alarms.values()
                    ),
                    f"{function} has no {metric} alarm",
                )
        metrics = {a["Properties"].get("MetricName") for a in alarms.values()}
        for metric in ("5XXError", "TransactionConflict", "ApproximateAgeOfOldestMessage", "SweepBehind"):
            self.assertIn(metric, metrics)

    def test_no_iam_wildcard_beyond_logs(self):
        roles = of_type(self.resources, "AWS::IAM::Role")
        for name, role in roles.items():
            props = role["Properties"]
            self.assertLessEqual(set(props.get("ManagedPolicyArns", [])), SAM_MANAGED_POLICIES, name)
            for policy in props.get("Policies", []):
                for statement in policy["PolicyDocument"]["Statement"]:
                    actions = statement["Action"]
                    actions = actions if isinstance(actions, list) else [actions]
                    resources = statement.get("Resource", [])
                    resources = resources if isinstance(resources, list) else [resources]
                    for action in actions:
                        self.assertNotIn("*", action, f"{name}: {action}")
                    for resource in resources:
                        text = json.dumps(resource)
                        if all(a.startswith("logs:") for a in actions):
                            # API Gateway's account-wide logging role: any log
                            # group of this account and region, as it creates
                            # them per API.
                            self.assertNotEqual(resource, "*", name)
                            continue
                        self.assertNotEqual(resource, "*", f"{name}: {actions}")
                        self.assertNotRegex(text, r"\*\"?$", f"{name}: {actions} on {text}")

    def test_sam_deploy_guided_asks_no_unauthorised_route_question(self):
        # What `sam deploy --guided` checks before it asks "X has no
        # authentication. Is this okay?", and stops if the answer is no.
        stacks, _ = SamLocalStackProvider.get_stacks(str(TEMPLATE))
        checked = auth_per_resource(stacks)
        self.assertTrue(checked)
        self.assertEqual([name for name, ok in checked if not ok], [])

    def test_dev_deletes_the_data_with_the_stack(self):
        for name in ("Table", "ProviderKey", "BootstrapSecret"):
            self.assertEqual(self.resources[name]["DeletionPolicy"], "Delete", name)
        self.assertFalse(self.resources["Table"]["Properties"]["DeletionProtectionEnabled"])

    def test_no_waf_and_no_mail_unless_asked(self):
        self.assertEqual(of_type(self.resources, "AWS::WAFv2::WebACLAssociation"), {})
        self.assertEqual(of_type(self.resources, "AWS::SNS::Subscription"), {})

    def test_preflights_are_answered_without_a_key(self):
        for path, item in self.api["paths"].items():
            self.assertIn("options", item, path)
            self.assertNotIn("security", item["options"], path)


class ProdDeploy(unittest.TestCase):
    def test_prod_keeps_the_data_and_protects_the_table(self):
        resources = expand(Environment="prod")["Resources"]
        for name in ("Table", "ProviderKey", "BootstrapSecret"):
            self.assertEqual(resources[name]["DeletionPolicy"], "RetainExceptOnCreate", name)
            self.assertEqual(resources[name]["UpdateReplacePolicy"], "Retain", name)
        self.assertTrue(resources["Table"]["Properties"]["DeletionProtectionEnabled"])


class OptionalParts(unittest.TestCase):
    def test_waf_and_mail_when_asked(self):
        acl = "arn:aws:wafv2:us-east-1:123456789012:regional/webacl/lambent/abc"
        resources = expand(WebAclArn=acl, AlarmEmail="ops@example.com")["Resources"]
        (association,) = of_type(resources, "AWS::WAFv2::WebACLAssociation").values()
        self.assertEqual(association["Properties"]["WebACLArn"], acl)
        stage = next(iter(of_type(resources, "AWS::ApiGateway::Stage")))
        self.assertIn(stage, refs(association["Properties"]["ResourceArn"]))
        (subscription,) = of_type(resources, "AWS::SNS::Subscription").values()
        self.assertEqual(subscription["Properties"]["Endpoint"], "ops@example.com")


if __name__ == "__main__":
    unittest.main()
