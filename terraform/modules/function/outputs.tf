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
