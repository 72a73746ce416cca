output "input_bucket" {
  description = "Drop request files under gs://<this>/<input_prefix>."
  value       = google_storage_bucket.input.name
}

output "work_bucket" {
  description = "Ledger, staged chunks, Vertex outputs, staged rows."
  value       = google_storage_bucket.work.name
}

output "topics" {
  description = "Pub/Sub topic names by role."
  value       = local.topic_names
}

output "dataset" {
  description = "BigQuery dataset of predictions, batch_jobs, run_states and the views latest_predictions and runs."
  value       = google_bigquery_dataset.pipeline.dataset_id
}

output "functions" {
  description = "Runtime service account of each function."
  value       = { for name, fn in module.function : name => fn.runtime_service_account }
}

output "settings" {
  description = "The functions' environment (no secrets): `make outputs` saves it for `gemini-batch … --config` (README: Day-2 operations)."
  value       = local.environment
}
