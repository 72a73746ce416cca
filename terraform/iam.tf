locals {
  runtimes = { for name, fn in module.function : name => "serviceAccount:${fn.runtime_service_account}" }
}

data "google_storage_project_service_account" "gcs_agent" {}

resource "google_project_service_identity" "vertex_agent" {
  provider = google-beta
  service  = "aiplatform.googleapis.com"
}

# The GCS service agent publishes finalize events for Eventarc.
resource "google_project_iam_member" "gcs_agent_publishes" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs_agent.email_address}"
}

# The Vertex AI service agent reads the staged inputs and writes predictions into the work bucket.
resource "google_storage_bucket_iam_member" "vertex_agent_work" {
  bucket = google_storage_bucket.work.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_project_service_identity.vertex_agent.email}"
}

# submit_batch reads uploads and writes rejection reports next to them.
resource "google_storage_bucket_iam_member" "submit_batch_input" {
  bucket = google_storage_bucket.input.name
  role   = "roles/storage.objectUser"
  member = local.runtimes["submit_batch"]
}

# submit_request reads gs:// sources named in messages (and writes reports for bq:// sources in the work bucket).
resource "google_storage_bucket_iam_member" "submit_request_input" {
  bucket = google_storage_bucket.input.name
  role   = "roles/storage.objectViewer"
  member = local.runtimes["submit_request"]
}

# Every function keeps the ledger, staging, outputs and rows in the work bucket.
resource "google_storage_bucket_iam_member" "work" {
  for_each = local.runtimes
  bucket   = google_storage_bucket.work.name
  role     = "roles/storage.objectUser"
  member   = each.value
}

# Who publishes on which topic, and why:
# - batch-finished: poll_batches announces finished jobs (and nudges collection); every function
#   that creates job attempts (submitters, collect_results' retries, poll_batches' redrives)
#   announces an attempt Vertex refused, so that its rows are recorded.
# - batch-results: whoever completes a run announces it (collect_results, or a submitter whose
#   jobs were all collected before it finished submitting); the submitters announce a run the
#   budget guard holds (or a reject message declines), poll_batches one whose approval expired.
# - batch-requests: poll_batches asks submit_request to resume a run whose submitter died, and a
#   submitter hands the rest of a file larger than one invocation on to a fresh one.
locals {
  publishers = {
    "batch-finished" = ["poll_batches", "submit_batch", "submit_request", "collect_results"]
    "batch-results"  = ["collect_results", "poll_batches", "submit_batch", "submit_request"]
    "batch-requests" = ["poll_batches", "submit_batch", "submit_request"]
  }
  publisher_grants = merge([
    for topic, functions in local.publishers : { for fn in functions : "${topic}/${fn}" => { topic = topic, fn = fn } }
  ]...)
}

# Each function publishes on the topics above, and only those.
resource "google_pubsub_topic_iam_member" "publishers" {
  for_each = local.publisher_grants
  topic    = google_pubsub_topic.topics[each.value.topic].name
  role     = "roles/pubsub.publisher"
  member   = local.runtimes[each.value.fn]
}

# collect_results (rows) and the submitters (rejected lines, and a run's summary when they complete it) load and query.
resource "google_bigquery_dataset_iam_member" "writers" {
  for_each   = toset(["submit_batch", "submit_request", "collect_results"])
  dataset_id = google_bigquery_dataset.pipeline.dataset_id
  role       = "roles/bigquery.dataEditor"
  member     = local.runtimes[each.value]
}

# Load and query jobs run in the project: jobUser has no narrower scope.
resource "google_project_iam_member" "job_users" {
  for_each = toset(["submit_batch", "submit_request", "collect_results"])
  project  = var.project_id
  role     = "roles/bigquery.jobUser"
  member   = local.runtimes[each.value]
}

# submit_request reads bq:// sources through the BigQuery Storage Read API (read sessions are
# created in the project: readSessionUser has no narrower scope).
resource "google_project_iam_member" "read_session_user" {
  project = var.project_id
  role    = "roles/bigquery.readSessionUser"
  member  = local.runtimes["submit_request"]
}

# The Cloud Scheduler job publishes the poll tick with its own identity.
resource "google_service_account" "scheduler" {
  account_id   = "${var.name_prefix}-scheduler"
  display_name = "gemini-batch-pipeline poll tick"
}

# The scheduler's identity publishes the poll tick, on that topic only.
resource "google_pubsub_topic_iam_member" "scheduler_publishes_tick" {
  topic  = google_pubsub_topic.topics["poll-tick"].name
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:${google_service_account.scheduler.email}"
}
