//! `/openapi.json`: the API described from the handlers' own types, with one
//! path per registered command name and query.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem,
    PathsBuilder, Ref, Required, ResponseBuilder,
};

use crate::activity::{RecentCommand, Second};
use crate::status::{NodeStatus, SnapshotStatus};
use crate::{AppState, ErrorBody, Hosted, WriteResponse};

fn json(schema: &str) -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name(schema)))
        .build()
}

fn any_json() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().build()))
        .build()
}

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json("ErrorBody"))
        .build()
}

fn text_param(
    name: &str,
    place: ParameterIn,
    description: &str,
) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(ObjectBuilder::new().schema_type(Type::String).build()))
        .build()
}

fn command_operation(id: String, summary: String) -> Operation {
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .parameter(text_param(
            "Idempotency-Key",
            ParameterIn::Header,
            "Becomes the command id: a retried request is applied once",
        ))
        .request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", any_json())
                .required(Some(Required::True))
                .build(),
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("Applied (or already applied by an earlier request with the same key)")
                .content("application/json", json("WriteResponse"))
                .build(),
        )
        .response("400", error("Malformed JSON, or a body that does not fit the command"))
        .response("404", error("Unknown command"))
        .response("409", error("Rejected by the model (index in the body), or the same key is in flight"))
        .response("413", error("Body over the limit"))
        .response("503", error("Stream unreachable, timeout, not the leader (Retry-After), or halted (with the reason)"))
        .build()
}

fn query_operation(name: &str) -> Operation {
    OperationBuilder::new()
        .operation_id(Some(format!("query_{name}")))
        .summary(Some(format!("Query {name}; other URL parameters are the query's own")))
        .parameter(text_param(
            "consistency",
            ParameterIn::Query,
            "local (default) | read_your_writes | linearizable | at_least:<index> | bounded:<duration>",
        ))
        .parameter(text_param(
            "Memstate-Last-Write",
            ParameterIn::Header,
            "With read_your_writes: the index of the caller's last write",
        ))
        .response(
            "200",
            ResponseBuilder::new()
                .description("The query's result")
                .content("application/json", any_json())
                .build(),
        )
        .response("400", error("Bad consistency or parameters"))
        .response("404", error("Unknown query"))
        .response("503", error("Consistency not reachable in time (Retry-After), or halted"))
        .build()
}

fn simple(id: &str, summary: &str, schema: Option<&str>) -> Operation {
    let ok = ResponseBuilder::new().description("OK");
    let ok = match schema {
        Some(s) => ok.content("application/json", json(s)),
        None => ok,
    };
    OperationBuilder::new()
        .operation_id(Some(id))
        .summary(Some(summary))
        .response("200", ok.build())
        .build()
}

pub(crate) fn build<M: Hosted>(state: &AppState<M>) -> OpenApi {
    let mut paths = PathsBuilder::new()
        .path(
            "/commands",
            PathItem::new(
                HttpMethod::Post,
                command_operation(
                    "command".into(),
                    "Execute a command (the whole command as JSON)".into(),
                ),
            ),
        )
        .path(
            "/status",
            PathItem::new(
                HttpMethod::Get,
                simple("status", "The node's view of itself", Some("NodeStatus")),
            ),
        )
        .path(
            "/healthz",
            PathItem::new(
                HttpMethod::Get,
                simple("healthz", "The process answers", None),
            ),
        )
        .path(
            "/readyz",
            PathItem::new(
                HttpMethod::Get,
                simple("readyz", "Running, caught up, not halted (else 503)", None),
            ),
        )
        .path(
            "/metrics",
            PathItem::new(
                HttpMethod::Get,
                simple("metrics", "Prometheus text format", None),
            ),
        )
        .path(
            "/events",
            PathItem::new(
                HttpMethod::Get,
                simple(
                    "events",
                    "Server-Sent Events; resumable with Last-Event-ID (an applied index)",
                    None,
                ),
            ),
        );
    for name in state.command_names.iter().flatten() {
        paths = paths.path(
            format!("/commands/{name}"),
            PathItem::new(
                HttpMethod::Post,
                command_operation(
                    format!("command_{name}"),
                    format!("Execute {name} (the body is its content)"),
                ),
            ),
        );
    }
    for name in state.queries.keys() {
        paths = paths.path(
            format!("/queries/{name}"),
            PathItem::new(HttpMethod::Get, query_operation(name)),
        );
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("memstate node")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A memstate node: commands go through the stream, queries read the in-memory model",
                ))
                .build(),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<WriteResponse>()
                .schema_from::<ErrorBody>()
                .schema_from::<NodeStatus>()
                .schema_from::<SnapshotStatus>()
                .schema_from::<Second>()
                .schema_from::<RecentCommand>()
                .build(),
        ))
        .build()
}

pub(crate) async fn document<M: Hosted>(State(state): State<Arc<AppState<M>>>) -> Json<OpenApi> {
    Json(build(&state))
}
