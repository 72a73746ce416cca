# One gen-2 function: its runtime and trigger service accounts, its source object, its trigger.

locals {
  # Service account ids have 6-30 characters and end in a letter or digit. Truncating a long name
  # alone would give two functions (or a function's two identities) the same id: a hash of the
  # full name keeps them apart.
  account_stem = "${replace(substr(replace(var.resource_name, "_", "-"), 0, 20), "/-+$/", "")}-${substr(sha1(var.resource_name), 0, 4)}"
}

resource "google_service_account" "runtime" {
  account_id   = "${local.account_stem}-run"
  display_name = "${var.name} runtime"
}

resource "google_service_account" "trigger" {
  account_id   = "${local.account_stem}-trg"
  display_name = "${var.name} trigger"
}

resource "google_storage_bucket_object" "source" {
  name   = "${var.name}-${filemd5(var.source_zip)}.zip" # hash-named: a new build redeploys
  bucket = var.source_bucket
  source = var.source_zip
}

resource "google_cloudfunctions2_function" "function" {
  name     = replace(var.resource_name, "_", "-")
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python311"
    entry_point = var.name
    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = var.memory
    available_cpu                  = var.cpu
    timeout_seconds                = var.timeout_seconds
    max_instance_count             = var.max_instances
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.runtime.email
    # One request at a time per instance: each handler may stream files of up to 1 GB, and
    # memory is sized for one. (The code is safe with more: clients are built once under a lock.)
    max_instance_request_concurrency = var.concurrency
    # Cloud Run answers an event with an error at the timeout but does not stop the handler:
    # the code checks this deadline itself before every paid or irreversible step.
    environment_variables = merge(var.environment, { FUNCTION_TIMEOUT_SECONDS = tostring(var.timeout_seconds) })
  }

  event_trigger {
    trigger_region        = var.region
    event_type            = var.trigger.event_type
    pubsub_topic          = var.trigger.pubsub_topic
    retry_policy          = "RETRY_POLICY_RETRY" # every handler is idempotent
    service_account_email = google_service_account.trigger.email

    dynamic "event_filters" {
      for_each = var.trigger.bucket == null ? [] : [var.trigger.bucket]
      content {
        attribute = "bucket"
        value     = event_filters.value
      }
    }
  }
}

# The trigger's identity may invoke this function, and nothing else.
resource "google_cloud_run_service_iam_member" "invoker" {
  location = var.region
  service  = google_cloudfunctions2_function.function.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.trigger.email}"
}

resource "google_project_iam_member" "trigger_receiver" {
  project = google_service_account.trigger.project
  role    = "roles/eventarc.eventReceiver" # receive the trigger's events; no narrower grant exists
  member  = "serviceAccount:${google_service_account.trigger.email}"
}

# Project-level roles only where the resource has no narrower grant; each caller says why.
resource "google_project_iam_member" "runtime" {
  for_each = toset(var.runtime_roles)
  project  = google_service_account.runtime.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.runtime.email}"
}
