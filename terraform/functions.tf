locals {
  topic_names = { for key, topic in google_pubsub_topic.topics : key => topic.name }

  # Terraform is the single writer of the functions' environment (shared/config.py reads it).
  environment = {
    # (FUNCTION_TIMEOUT_SECONDS is added per function by modules/function, from its own timeout.)
    GCP_PROJECT     = var.project_id
    VERTEX_LOCATION = var.region
    # BigQuery jobs are regional: every job create/get/query names the dataset's location.
    BQ_LOCATION          = google_bigquery_dataset.pipeline.location
    INPUT_BUCKET         = google_storage_bucket.input.name
    INPUT_PREFIX         = var.input_prefix
    WORK_BUCKET          = google_storage_bucket.work.name
    VERTEX_BUCKET        = google_storage_bucket.vertex.name
    BQ_DATASET           = google_bigquery_dataset.pipeline.dataset_id
    BATCH_REQUESTS_TOPIC = local.topic_names["batch-requests"]
    BATCH_FINISHED_TOPIC = local.topic_names["batch-finished"]
    BATCH_RESULTS_TOPIC  = local.topic_names["batch-results"]
    MODEL                = var.model
    MAX_ATTEMPTS         = tostring(var.max_attempts)
    MAX_REQUESTS_PER_JOB = tostring(var.max_requests_per_job)
    MAX_BYTES_PER_JOB    = "1000000000"
    MAX_LINE_BYTES       = "10485760"
    SKIP_INVALID_LINES   = tostring(var.skip_invalid_lines)
    # What one submit invocation reads of a file before handing on (README: capacity).
    SUBMIT_BYTES_PER_INVOCATION = tostring(var.submit_bytes_per_invocation)
    # Vertex runs 8 Gemini batch jobs at once per project and region unless Google raised it: the
    # rest wait QUEUED in the ledger (README: quotas). 429s on create pause admission (doubling).
    MAX_CONCURRENT_JOBS    = tostring(var.max_concurrent_jobs)
    CREATE_BACKOFF_SECONDS = "60"
    # A table's rows files are loaded together, one load job per window (BigQuery: 1,500 loads a table a day).
    LOAD_WINDOW_SECONDS = tostring(var.load_window_seconds)
    # The budget guard (README: cost): unset limits are no limits.
    MAX_RUN_COST_USD         = var.max_run_cost_usd == null ? "" : tostring(var.max_run_cost_usd)
    MAX_DAILY_COST_USD       = var.max_daily_cost_usd == null ? "" : tostring(var.max_daily_cost_usd)
    APPROVAL_TIMEOUT_SECONDS = tostring(var.approval_timeout_hours * 3600)
    PRICES_URI               = var.prices_file == null ? "" : "gs://${google_storage_bucket.work.name}/${google_storage_bucket_object.prices[0].name}"
    RUN_SLA_SECONDS          = tostring(var.run_sla_hours * 3600)
    QUEUE_TIMEOUT_SECONDS    = tostring(var.queue_timeout_seconds)
    RUN_TIMEOUT_SECONDS      = tostring(var.run_timeout_seconds)
    CANCEL_TIMEOUT_SECONDS   = tostring(var.cancel_timeout_seconds)
    # A claim's lease outlives the longest invocation (540 s) that could still hold it.
    LEASE_SECONDS         = "600"
    MAX_EVENT_AGE_SECONDS = "86400"
  }

  # Sizes from `make bench-e2e` (README: Capacity). Each function works on one request at a time
  # in one Python thread: 1 vCPU, and memory for its peak with 2x to spare: ~260 MiB at a
  # 200k-request chunk; a submitter reading back the key index of a 10M-line file, ~650 MiB.
  sizes = {
    submit  = { memory = "2Gi", cpu = "1", timeout_seconds = 540 }
    collect = { memory = "1Gi", cpu = "1", timeout_seconds = 540 }
    poll    = { memory = "512Mi", cpu = "1", timeout_seconds = 540 }
  }

  functions = {
    submit_batch = {
      trigger = { event_type = "google.cloud.storage.object.v1.finalized", bucket = google_storage_bucket.input.name }
      size    = local.sizes.submit
    }
    submit_request = {
      trigger = { event_type = "google.cloud.pubsub.topic.v1.messagePublished", pubsub_topic = google_pubsub_topic.topics["batch-requests"].id }
      size    = local.sizes.submit
    }
    poll_batches = {
      trigger = { event_type = "google.cloud.pubsub.topic.v1.messagePublished", pubsub_topic = google_pubsub_topic.topics["poll-tick"].id }
      size    = local.sizes.poll
    }
    collect_results = {
      trigger = { event_type = "google.cloud.pubsub.topic.v1.messagePublished", pubsub_topic = google_pubsub_topic.topics["batch-finished"].id }
      size    = local.sizes.collect
    }
  }
}

module "function" {
  source   = "./modules/function"
  for_each = local.functions

  name            = each.key
  resource_name   = "${var.name_prefix}-${each.key}"
  region          = var.region
  source_bucket   = google_storage_bucket.source.name
  source_zip      = "${var.function_source_dir}/${each.key}.zip"
  environment     = local.environment
  trigger         = each.value.trigger
  memory          = each.value.size.memory
  cpu             = each.value.size.cpu
  timeout_seconds = each.value.size.timeout_seconds
  labels          = var.labels
  # Vertex AI batch jobs and BigQuery jobs have no narrower resource to grant on: custom roles
  # with exactly what the code calls, on the project (iam.tf).
  runtime_roles = local.function_roles[each.key]

  # The tables first: new code may write a column an upgrade adds (a load drops what the table lacks).
  depends_on = [google_project_service.apis, google_project_iam_member.gcs_agent_publishes, google_project_iam_custom_role.pipeline, google_bigquery_table.predictions, google_bigquery_table.batch_jobs, google_bigquery_table.run_states]
}
