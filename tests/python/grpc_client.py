#!/usr/bin/env python3
"""An independent gRPC client (grpcio) for the coordinator, driven by the e2e
tests: the health service, server reflection (list services, describe one),
and calling any method by name with a JSON request, its types found through
reflection alone, as grpcurl does. Prints one JSON document on stdout; a gRPC
error prints {"code", "details"} and exits 3.

    grpc_client.py --target HOST:PORT --ca CA.pem [--token T] health [SERVICE]
    grpc_client.py ... list
    grpc_client.py ... describe pgsnapman.v1.AdminService
    grpc_client.py ... call pgsnapman.v1.AdminService/ListWorkers '{}'
"""
import argparse
import collections
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


class _Details(
    collections.namedtuple(
        "_Details",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (reflection too)."""

    def __init__(self, token):
        self.metadata = [("authorization", f"Bearer {token}")]

    def _with_token(self, d):
        metadata = list(d.metadata or []) + self.metadata
        return _Details(d.method, d.timeout, metadata, d.credentials,
                        d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_token(details), request)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_token(details), requests)


def channel(args):
    with open(args.ca, "rb") as f:
        creds = grpc.ssl_channel_credentials(root_certificates=f.read())
    ch = grpc.secure_channel(args.target, creds)
    if args.token:
        ch = grpc.intercept_channel(ch, BearerToken(args.token))
    return ch


def health(ch, args):
    stub = health_pb2_grpc.HealthStub(ch)
    reply = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=10)
    return {"status": health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}


def pool_of(ch):
    return descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(ch))


def list_services(ch, _args):
    return {"services": sorted(ProtoReflectionDescriptorDatabase(ch).get_services())}


def describe(ch, args):
    service = pool_of(ch).FindServiceByName(args.service)
    return {
        "service": service.full_name,
        "methods": [
            {
                "name": m.name,
                "input": m.input_type.full_name,
                "output": m.output_type.full_name,
                "client_streaming": m.client_streaming,
                "server_streaming": m.server_streaming,
            }
            for m in service.methods
        ],
    }


def call(ch, args):
    service_name, method_name = args.method.rsplit("/", 1)
    method = pool_of(ch).FindServiceByName(service_name).FindMethodByName(method_name)
    request_type = message_factory.GetMessageClass(method.input_type)
    reply_type = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(args.request, request_type())
    rpc = ch.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=request_type.SerializeToString,
        response_deserializer=reply_type.FromString,
    )
    reply = rpc(request, timeout=30)
    return json.loads(json_format.MessageToJson(reply, preserving_proto_field_name=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--token")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("health")
    h.add_argument("service", nargs="?", default="")
    h.set_defaults(run=health)
    sub.add_parser("list").set_defaults(run=list_services)
    d = sub.add_parser("describe")
    d.add_argument("service")
    d.set_defaults(run=describe)
    c = sub.add_parser("call")
    c.add_argument("method")
    c.add_argument("request", nargs="?", default="{}")
    c.set_defaults(run=call)
    args = p.parse_args()
    try:
        out = args.run(channel(args), args)
    except grpc.RpcError as e:
        print(json.dumps({"code": e.code().name, "details": e.details()}))
        return 3
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
