use thiserror::Error;

/// Why an annotation could not be parsed. Every variant names the annotation key
/// so that the caller can turn it into an Event or log line without context.
#[derive(Debug, Error)]
pub enum AnnotationError {
    #[error("annotation {annotation}: malformed JSON: {source}")]
    Json {
        annotation: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("annotation {annotation}: field {field} is missing")]
    Missing {
        annotation: &'static str,
        field: String,
    },
    #[error("annotation {annotation}: field {field} has invalid value {value:?}: {reason}")]
    Invalid {
        annotation: &'static str,
        field: String,
        value: String,
        reason: String,
    },
}

impl AnnotationError {
    pub(crate) fn invalid(
        annotation: &'static str,
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        AnnotationError::Invalid {
            annotation,
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(annotation: &'static str, field: impl Into<String>) -> Self {
        AnnotationError::Missing {
            annotation,
            field: field.into(),
        }
    }

    /// The annotation key this error is about.
    pub fn annotation(&self) -> &'static str {
        match self {
            AnnotationError::Json { annotation, .. }
            | AnnotationError::Missing { annotation, .. }
            | AnnotationError::Invalid { annotation, .. } => annotation,
        }
    }
}
