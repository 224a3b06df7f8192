"""gRPC plumbing shared by the services: server bootstrap, errors, interceptors, auth client."""

from analytics_grpc.errors import FieldViolation, ServiceError
from analytics_grpc.server import GrpcServer

__all__ = ["FieldViolation", "GrpcServer", "ServiceError"]
