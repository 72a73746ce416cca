# Plan-level tests of modules/function with mocked providers: what every function gets.

mock_provider "google" {
  mock_resource "google_service_account" {
    defaults = { email = "sa@my-project.iam.gserviceaccount.com", project = "my-project" }
  }
}

variables {
  name          = "submit_batch"
  resource_name = "gbp-submit_batch"
  region        = "us-central1"
  source_bucket = "gbp-source-my-project"
  source_zip    = "../build/submit_batch.zip"
  environment   = { GCP_PROJECT = "my-project" }
  trigger       = { event_type = "google.cloud.storage.object.v1.finalized", bucket = "gbp-input-my-project" }
  runtime_roles = ["projects/my-project/roles/gbp_vertex_jobs"]
}

run "storage_triggered" {
  command = apply
  module {
    source = "./modules/function"
  }

  assert {
    condition     = google_cloudfunctions2_function.function.name == "gbp-submit-batch"
    error_message = "function names are valid resource names"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.build_config[0].entry_point == "submit_batch"
    error_message = "the entry point is the function's name"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.service_config[0].ingress_settings == "ALLOW_INTERNAL_ONLY"
    error_message = "functions are reachable from inside the project only"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.service_config[0].environment_variables == tomap(merge(var.environment, { FUNCTION_TIMEOUT_SECONDS = "540" }))
    error_message = "the function gets exactly the environment it is given, and its own timeout"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.service_config[0].max_instance_request_concurrency == 1
    error_message = "one request per instance unless said otherwise"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.event_trigger[0].retry_policy == "RETRY_POLICY_RETRY"
    error_message = "failed deliveries are retried (the handlers are idempotent)"
  }
  assert {
    condition     = [for f in google_cloudfunctions2_function.function.event_trigger[0].event_filters : [f.attribute, f.value]] == [["bucket", "gbp-input-my-project"]]
    error_message = "a storage trigger filters on its bucket"
  }
  assert {
    condition     = google_service_account.runtime.account_id != google_service_account.trigger.account_id
    error_message = "runtime and trigger identities are separate"
  }
  assert {
    condition     = google_cloud_run_service_iam_member.invoker.role == "roles/run.invoker" && google_cloud_run_service_iam_member.invoker.service == google_cloudfunctions2_function.function.service_config[0].service
    error_message = "the invoker grant is on the function's own service"
  }
  assert {
    condition     = google_cloud_run_service_iam_member.invoker.member == "serviceAccount:${google_service_account.trigger.email}"
    error_message = "only the trigger identity may invoke"
  }
  assert {
    condition = alltrue([
      for id in [google_service_account.runtime.account_id, google_service_account.trigger.account_id] :
      can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", id))
    ])
    error_message = "service account ids are valid (6-30 characters, ending in a letter or digit)"
  }
  assert {
    condition     = startswith(google_storage_bucket_object.source.name, "submit_batch-") && endswith(google_storage_bucket_object.source.name, ".zip")
    error_message = "the source object is hash-named"
  }
}

run "pubsub_triggered" {
  command = plan
  module {
    source = "./modules/function"
  }
  variables {
    name          = "collect_results"
    resource_name = "a-twenty-char-prefix-collect_results"
    source_zip    = "../build/collect_results.zip"
    trigger       = { event_type = "google.cloud.pubsub.topic.v1.messagePublished", pubsub_topic = "projects/my-project/topics/gbp-batch-finished" }
  }

  assert {
    condition     = length(google_cloudfunctions2_function.function.event_trigger[0].event_filters) == 0
    error_message = "a Pub/Sub trigger has no bucket filter"
  }
  assert {
    condition     = google_cloudfunctions2_function.function.event_trigger[0].pubsub_topic == "projects/my-project/topics/gbp-batch-finished"
    error_message = "a Pub/Sub trigger listens on its topic"
  }
  assert {
    condition = alltrue([
      for id in [google_service_account.runtime.account_id, google_service_account.trigger.account_id] :
      can(regex("^[a-z][-a-z0-9]{4,28}[a-z0-9]$", id))
    ]) && google_service_account.runtime.account_id != google_service_account.trigger.account_id
    error_message = "the longest prefix still gives valid, distinct service account ids"
  }
}
