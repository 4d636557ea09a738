//! The API's description, served at `/api/openapi.json` (OpenAPI 3.1). Written by hand beside
//! the router it describes; the server's tests check that every route is in it.

use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn job_id() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } })
}

fn job_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } }
    })
}

pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Atelier",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Neural style transfer as a service: submit a photo and a style, follow the job, download the result. Jobs run one after another on the server's engine; results are deleted a while after they finish (`expires_in`). With a token, every call but this document needs `Authorization: Bearer TOKEN` (or `?token=TOKEN`, for EventSource and image links)."
        },
        "security": [ { "bearer": [] }, {} ],
        "paths": {
            "/api/jobs": {
                "post": {
                    "summary": "Submit a job",
                    "requestBody": {
                        "required": true,
                        "content": { "multipart/form-data": { "schema": {
                            "type": "object",
                            "required": ["photo"],
                            "properties": {
                                "photo": { "type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP or TIFF; limited in bytes and pixels (see GET /api/styles `limits`)" },
                                "style": { "type": "string", "description": "A style id from GET /api/styles" },
                                "painting": { "type": "string", "format": "binary", "description": "Any painting, for the arbitrary or optimize method (instead of `style`)" },
                                "method": { "type": "string", "enum": ["network", "arbitrary", "optimize"], "description": "Default: network for a trained style, arbitrary for a painting" },
                                "strength": { "type": "number", "minimum": 0, "maximum": 1, "default": 1 },
                                "preserve_color": { "type": "boolean", "default": false },
                                "size": { "type": "integer", "description": "Longer side of the result in pixels (default: the photo's, capped by the server; 512 for optimize)" },
                                "steps": { "type": "integer", "default": 100, "description": "Optimisation steps (optimize)" },
                                "transform": { "type": "string", "enum": ["adain", "wct"], "default": "adain", "description": "Feature transform (arbitrary)" },
                                "seed": { "type": "integer", "default": 0 },
                                "stroke": { "type": "number", "minimum": 0.25, "maximum": 4, "default": 1, "description": "Stroke scale of the network method: 2 paints strokes twice as large" },
                                "mask": { "type": "string", "format": "binary", "description": "Where the style paints: a grey image, white paints, black keeps the photo (any size, scaled to the photo)" },
                                "feather": { "type": "number", "minimum": 0, "maximum": 1000, "default": 16, "description": "Feather of the mask's edge in pixels of the result" }
                            }
                        } } }
                    },
                    "responses": {
                        "202": job_response("Queued; `Location` names the job"),
                        "400": error_response("A missing or bad field, or a malformed form"),
                        "401": error_response("Token missing or wrong"),
                        "404": error_response("Unknown style"),
                        "408": error_response("The upload did not arrive in time"),
                        "413": error_response("Upload too large, in bytes or in pixels"),
                        "415": error_response("Not an image"),
                        "422": error_response("An image that cannot be decoded"),
                        "503": error_response("The queue is full; `Retry-After` says when to try again")
                    }
                }
            },
            "/api/jobs/{id}": {
                "get": {
                    "summary": "A job's state and progress",
                    "parameters": [job_id()],
                    "responses": { "200": job_response("The job"), "404": error_response("Unknown or expired") }
                },
                "delete": {
                    "summary": "Cancel a queued or running job; delete one that ended, with its result",
                    "parameters": [job_id()],
                    "responses": { "200": job_response("The job as it was left"), "404": error_response("Unknown or expired") }
                }
            },
            "/api/jobs/{id}/result": {
                "get": {
                    "summary": "The finished image (PNG, with the recipe in an `atelier-recipe` text chunk)",
                    "parameters": [job_id()],
                    "responses": {
                        "200": { "description": "The image", "content": { "image/png": {} } },
                        "404": error_response("Unknown or expired"),
                        "409": error_response("Not finished (or failed, or cancelled)")
                    }
                }
            },
            "/api/jobs/{id}/preview": {
                "get": {
                    "summary": "The newest intermediate picture of an optimisation",
                    "parameters": [job_id()],
                    "responses": {
                        "200": { "description": "JPEG", "content": { "image/jpeg": {} } },
                        "404": error_response("Unknown job, or no picture yet")
                    }
                }
            },
            "/api/jobs/{id}/events": {
                "get": {
                    "summary": "Server-sent events: a `job` event (the Job as JSON) at each change; the stream ends after the last state",
                    "parameters": [job_id()],
                    "responses": {
                        "200": { "description": "text/event-stream", "content": { "text/event-stream": {} } },
                        "404": error_response("Unknown or expired")
                    }
                }
            },
            "/api/styles": {
                "get": {
                    "summary": "The gallery, the methods and the server's limits",
                    "responses": { "200": { "description": "Styles", "content": { "application/json": { "schema": {
                        "type": "object",
                        "properties": {
                            "styles": { "type": "array", "items": { "$ref": "#/components/schemas/Style" } },
                            "methods": { "type": "array", "items": { "type": "string" } },
                            "limits": { "type": "object" }
                        }
                    } } } } }
                }
            },
            "/api/styles/{id}/thumbnail": {
                "get": {
                    "summary": "A style's thumbnail",
                    "parameters": [ { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } } ],
                    "responses": { "200": { "description": "An image" }, "404": error_response("Unknown style or none") }
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Jobs live now and the queue's size",
                    "responses": { "200": { "description": "Counts", "content": { "application/json": {} } } }
                }
            },
            "/api/openapi.json": {
                "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": { "error": { "type": "object", "properties": {
                        "code": { "type": "string" }, "message": { "type": "string" }
                    } } }
                },
                "Style": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "name": { "type": "string" },
                        "description": { "type": ["string", "null"] },
                        "methods": { "type": "array", "items": { "type": "string" } },
                        "thumbnail": { "type": ["string", "null"] }
                    }
                },
                "Job": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "string" },
                        "state": { "type": "string", "enum": ["queued", "running", "finished", "failed", "cancelled"] },
                        "method": { "type": "string" },
                        "step": { "type": "integer" },
                        "total_steps": { "type": "integer" },
                        "progress": { "type": "number" },
                        "created": { "type": "integer", "description": "Unix seconds" },
                        "seconds": { "type": ["number", "null"] },
                        "width": { "type": ["integer", "null"] },
                        "height": { "type": ["integer", "null"] },
                        "error": { "type": ["object", "null"] },
                        "result": { "type": ["string", "null"] },
                        "preview": { "type": ["string", "null"] },
                        "expires_in": { "type": ["integer", "null"] },
                        "recipe": { "type": "object" }
                    }
                }
            }
        }
    })
}
