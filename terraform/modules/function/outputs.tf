output "runtime_service_account" {
  description = "Email of the function's runtime service account."
  value       = google_service_account.runtime.email
}

output "trigger_service_account" {
  description = "Email of the function's trigger service account."
  value       = google_service_account.trigger.email
}

output "uri" {
  description = "The function's (internal-only) URI."
  value       = google_cloudfunctions2_function.function.service_config[0].uri
}

output "environment" {
  description = "The environment the function runs with (FUNCTION_TIMEOUT_SECONDS included)."
  value       = google_cloudfunctions2_function.function.service_config[0].environment_variables
}

output "timeout_seconds" {
  description = "The function's timeout."
  value       = google_cloudfunctions2_function.function.service_config[0].timeout_seconds
}

output "concurrency" {
  description = "Requests one instance serves at once."
  value       = google_cloudfunctions2_function.function.service_config[0].max_instance_request_concurrency
}

output "size" {
  description = "Memory and vCPUs of one instance."
  value = {
    memory = google_cloudfunctions2_function.function.service_config[0].available_memory
    cpu    = google_cloudfunctions2_function.function.service_config[0].available_cpu
  }
}

output "runtime_roles" {
  description = "Project-level roles of the runtime service account."
  value       = [for grant in google_project_iam_member.runtime : grant.role]
}
