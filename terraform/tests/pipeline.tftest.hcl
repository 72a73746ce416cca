# Plan-level tests of the whole tree with mocked providers: no credentials, no API calls.
# `terraform test` runs them (after `make build`, which writes the function zips to ../build);
# make test runs them offline against the provider schema (tests/terraform/test_validate.py).

mock_provider "google" {
  mock_resource "google_service_account" {
    defaults = { email = "sa@my-project.iam.gserviceaccount.com", project = "my-project" }
  }
  mock_data "google_storage_project_service_account" {
    defaults = { email_address = "service-1@gs-project-accounts.iam.gserviceaccount.com" }
  }
}

mock_provider "google-beta" {
  mock_resource "google_project_service_identity" {
    defaults = { email = "service-1@gcp-sa-aiplatform.iam.gserviceaccount.com" }
  }
}

variables {
  project_id          = "my-project"
  labels              = { app = "gemini-batch-pipeline" }
  isolate_work_bucket = true
}

# apply with mocked providers: nothing is created, every computed value is known (mocked).
run "pipeline" {
  command = apply

  assert {
    condition     = toset(keys(output.functions)) == toset(["submit_batch", "submit_request", "poll_batches", "collect_results"])
    error_message = "the four functions are deployed"
  }
  assert {
    condition = alltrue([
      for b in [google_storage_bucket.input, google_storage_bucket.work, google_storage_bucket.source] :
      b.public_access_prevention == "enforced" && b.uniform_bucket_level_access
    ])
    error_message = "every bucket has uniform access and public access prevention"
  }
  assert {
    condition     = toset(keys(output.topics)) == toset(["batch-requests", "poll-tick", "batch-finished", "batch-results", "dead-letter"])
    error_message = "the five topics exist"
  }
  assert {
    condition     = output.topics["poll-tick"] == "gbp-poll-tick"
    error_message = "topic names carry the prefix"
  }
  assert {
    condition     = google_cloud_scheduler_job.poll_tick.pubsub_target[0].topic_name == google_pubsub_topic.topics["poll-tick"].id
    error_message = "the scheduler ticks the poll-tick topic"
  }
  assert {
    condition     = jsondecode(google_bigquery_table.predictions.schema) == jsondecode(file("${path.module}/../shared/core/schemas/predictions.json"))
    error_message = "predictions uses the code's schema file"
  }
  assert {
    condition     = jsondecode(google_bigquery_table.batch_jobs.schema) == jsondecode(file("${path.module}/../shared/core/schemas/batch_jobs.json"))
    error_message = "batch_jobs uses the code's schema file"
  }
  assert {
    condition     = strcontains(google_bigquery_table.latest_predictions.view[0].query, "`my-project.gbp_pipeline.predictions`")
    error_message = "the view reads this project's predictions table"
  }
  assert {
    condition     = google_bigquery_table.predictions.deletion_protection && google_bigquery_table.batch_jobs.deletion_protection
    error_message = "tables are protected from deletion by default"
  }
  assert {
    condition     = google_storage_bucket_iam_member.vertex_agent_io.member == "serviceAccount:service-1@gcp-sa-aiplatform.iam.gserviceaccount.com" && google_storage_bucket_iam_member.vertex_agent_io.bucket == google_storage_bucket.vertex.name
    error_message = "the Vertex AI service agent reads inputs and writes outputs in the Vertex bucket"
  }
  assert {
    condition     = google_project_iam_member.gcs_agent_publishes.member == "serviceAccount:service-1@gs-project-accounts.iam.gserviceaccount.com"
    error_message = "the GCS service agent may publish finalize events"
  }
  assert {
    condition     = toset([for key, grant in google_bigquery_table_iam_member.tables : grant.table_id]) == toset(["predictions", "batch_jobs", "latest_predictions", "run_states"]) && length(google_bigquery_table_iam_member.tables) == 16
    error_message = "every function reads and appends to the pipeline's tables (the poller loads windows; every one writes run_states rows), and nothing else of BigQuery"
  }
  assert {
    condition     = alltrue([for key, grant in google_bigquery_table_iam_member.tables : grant.role == google_project_iam_custom_role.pipeline["bigquery_tables"].id])
    error_message = "table grants are the custom role, not dataEditor"
  }
  assert {
    condition     = !contains(google_project_iam_custom_role.pipeline["bigquery_tables"].permissions, "bigquery.tables.delete") && !contains(google_project_iam_custom_role.pipeline["bigquery_tables"].permissions, "bigquery.tables.create")
    error_message = "the functions can neither delete nor create tables"
  }
  assert {
    condition = alltrue(flatten([
      for name, fn in module.function : [for role in fn.runtime_roles : !startswith(role, "roles/")]
    ]))
    error_message = "no predefined project role for any runtime (no project-wide aiplatform.user, no jobUser)"
  }
  assert {
    condition     = toset(google_project_iam_custom_role.pipeline["vertex_jobs"].permissions) == toset(["aiplatform.batchPredictionJobs.create", "aiplatform.batchPredictionJobs.get", "aiplatform.batchPredictionJobs.list"]) && toset(google_project_iam_custom_role.pipeline["vertex_cancel"].permissions) == toset(["aiplatform.batchPredictionJobs.cancel"])
    error_message = "the Vertex roles are exactly the batch-job calls the adapter makes"
  }
  assert {
    condition = alltrue([
      for name, fn in module.function : contains(fn.runtime_roles, "projects/my-project/roles/gbp_vertex_cancel") == contains(["poll_batches", "submit_request"], name)
    ])
    error_message = "only the poller (stuck jobs, cancelled runs) and submit_request (a cancel message) cancel jobs"
  }
  assert {
    condition = alltrue([
      for grant in concat([google_storage_bucket_iam_member.vertex_agent_io], values(google_storage_bucket_iam_member.work), [google_storage_bucket_iam_member.submit_batch_input, google_storage_bucket_iam_member.submit_request_input]) :
      grant.bucket != google_storage_bucket.work.name || !strcontains(grant.member, "gcp-sa-aiplatform")
    ])
    error_message = "nothing of ours grants the Vertex AI service agent the work bucket (the ledger, the rows)"
  }
  assert {
    condition     = toset(google_iam_deny_policy.vertex_agent_work[0].rules[0].deny_rule[0].denied_principals) == toset(["principal://iam.googleapis.com/projects/-/serviceAccounts/service-1@gcp-sa-aiplatform.iam.gserviceaccount.com"]) && contains(google_iam_deny_policy.vertex_agent_work[0].rules[0].deny_rule[0].denied_permissions, "storage.googleapis.com/objects.get") && contains(google_iam_deny_policy.vertex_agent_work[0].rules[0].deny_rule[0].denied_permissions, "storage.googleapis.com/objects.list")
    error_message = "the Vertex AI service agent is denied reading or listing the work bucket, whatever its Google-granted role allows"
  }
  assert {
    condition     = google_tags_location_tag_binding.work_private[0].parent == "//storage.googleapis.com/projects/_/buckets/${google_storage_bucket.work.name}" && strcontains(google_iam_deny_policy.vertex_agent_work[0].rules[0].deny_rule[0].denial_condition[0].expression, google_tags_tag_value.private[0].id)
    error_message = "the deny policy names the tag bound to the work bucket, and to no other"
  }
  assert {
    condition     = alltrue([for name, fn in module.function : fn.environment["VERTEX_BUCKET"] == google_storage_bucket.vertex.name]) && length(google_storage_bucket_iam_member.vertex_io) == 4
    error_message = "every function stages Vertex's inputs and reads its outputs in the Vertex I/O bucket"
  }
  assert {
    condition = alltrue(flatten([
      for rule in google_storage_bucket.work.lifecycle_rule : [
        for c in rule.condition : (c.days_since_custom_time == 30 && coalesce(c.age, 0) == 0) || coalesce(c.age, 0) >= 180
      ]
    ])) && length(google_storage_bucket.work.lifecycle_rule) == 3
    error_message = "work files are deleted only after the custom time their finished run sets, or as a backstop long after any run"
  }
  assert {
    condition = alltrue([
      for name, fn in module.function : fn.environment["BQ_LOCATION"] == google_bigquery_dataset.pipeline.location
    ])
    error_message = "every function names the dataset's location on its BigQuery jobs"
  }
  assert {
    condition = alltrue([
      for name, fn in module.function : fn.environment["FUNCTION_TIMEOUT_SECONDS"] == tostring(fn.timeout_seconds)
    ])
    error_message = "every function knows its own timeout"
  }
  assert {
    condition     = alltrue([for name, fn in module.function : fn.concurrency == 1])
    error_message = "every function serves one request per instance"
  }
  assert {
    condition = alltrue([
      for name, memory in { submit_batch = "2Gi", submit_request = "2Gi", collect_results = "1Gi" } :
      module.function[name].size.memory == memory && module.function[name].size.cpu == "1"
    ])
    error_message = "the functions that stream files get the size the capacity model sets (README: Capacity)"
  }
  assert {
    condition     = toset(keys(google_pubsub_topic_iam_member.publishers)) == toset(["batch-finished/poll_batches", "batch-finished/submit_batch", "batch-finished/submit_request", "batch-finished/collect_results", "batch-results/collect_results", "batch-results/poll_batches", "batch-results/submit_batch", "batch-results/submit_request", "batch-requests/poll_batches", "batch-requests/submit_batch", "batch-requests/submit_request"])
    error_message = "each function publishes only where the code does"
  }
}

run "max_attempts_is_validated" {
  command = plan
  variables { max_attempts = 0 }
  expect_failures = [var.max_attempts]
}

run "max_concurrent_jobs_is_validated" {
  command = plan
  variables { max_concurrent_jobs = 0 }
  expect_failures = [var.max_concurrent_jobs]
}

run "load_window_seconds_is_validated" {
  command = plan
  variables { load_window_seconds = 60 }
  expect_failures = [var.load_window_seconds]
}

run "observability" {
  command = plan
  variables {
    alert_emails  = ["ops@example.com", "oncall@example.com"]
    run_sla_hours = 12
  }
  assert {
    condition     = length(google_monitoring_notification_channel.email) == 2 && alltrue([for c in google_monitoring_notification_channel.email : c.type == "email"])
    error_message = "one email notification channel per address"
  }
  assert {
    condition = alltrue(concat(
      [for p in google_monitoring_alert_policy.counters : length(p.notification_channels) == 2 && length(p.documentation[0].content) > 100],
      [for p in [google_monitoring_alert_policy.error_rate, google_monitoring_alert_policy.failed_share, google_monitoring_alert_policy.poll_silence] : length(p.notification_channels) == 2 && length(p.documentation[0].content) > 100],
    ))
    error_message = "every alert notifies the channels and says what to do"
  }
  assert {
    condition     = toset(keys(google_monitoring_alert_policy.counters)) == toset(["events_dropped", "stuck_jobs", "runs_overdue", "dead_letters", "function_5xx"])
    error_message = "the alerts the README lists"
  }
  assert {
    condition     = toset(keys(google_logging_metric.pipeline)) == toset(["rows_loaded", "runs_completed", "runs_rejected", "runs_awaiting_approval", "runs_overdue", "run_failed_share", "function_events", "stuck_jobs", "handler_seconds", "poll_ticks"])
    error_message = "the log-based metrics the README lists"
  }
  assert {
    condition     = alltrue([for m in google_logging_metric.pipeline : startswith(m.name, "gbp/") && strcontains(m.filter, "jsonPayload.logger=~\"^gbp\"")])
    error_message = "metrics are named under the prefix and read only the pipeline's own log lines"
  }
  assert {
    condition     = length(jsondecode(google_monitoring_dashboard.pipeline.dashboard_json).mosaicLayout.tiles) == 16 && strcontains(google_monitoring_dashboard.pipeline.dashboard_json, "logging.googleapis.com/user/gbp/function_events") && strcontains(google_monitoring_dashboard.pipeline.dashboard_json, "user_gbp_rows_loaded_sum")
    error_message = "the dashboard is valid JSON over the pipeline's metrics"
  }
  assert {
    condition     = google_pubsub_subscription.dead_letters.topic == google_pubsub_topic.topics["dead-letter"].id && google_pubsub_subscription.dead_letters.message_retention_duration == "604800s"
    error_message = "dead letters are kept a week in a subscription (a topic without one drops them), the alert watches its backlog"
  }
  assert {
    condition     = alltrue([for name, fn in module.function : fn.environment["RUN_SLA_SECONDS"] == "43200"])
    error_message = "the poller logs overdue runs at the SLA the alert is named for"
  }
}

run "the_deny_policy_is_opt_in" {
  command = plan
  variables { isolate_work_bucket = false }
  assert {
    condition     = length(google_iam_deny_policy.vertex_agent_work) == 0 && length(google_tags_tag_key.private) == 0
    error_message = "without isolate_work_bucket there is no deny policy and no tag (deployers without Deny Admin)"
  }
}

run "no_alert_emails_means_no_channels" {
  command = plan
  assert {
    condition     = length(google_monitoring_notification_channel.email) == 0 && length(google_monitoring_alert_policy.error_rate.notification_channels) == 0
    error_message = "without emails the alerts open incidents only"
  }
}

run "budget_limits_are_unset_by_default_and_passed_on_when_set" {
  command = plan
  variables {
    max_run_cost_usd   = 25
    max_daily_cost_usd = 250.5
    prices_file        = "../shared/core/schemas/prices.json"
  }
  assert {
    condition = alltrue([
      for name, fn in module.function : fn.environment["MAX_RUN_COST_USD"] == "25" && fn.environment["MAX_DAILY_COST_USD"] == "250.5" && fn.environment["APPROVAL_TIMEOUT_SECONDS"] == "259200"
    ])
    error_message = "every function reads the same limits"
  }
  assert {
    condition     = startswith(google_storage_bucket_object.prices[0].name, "config/prices-") && google_storage_bucket_object.prices[0].bucket == google_storage_bucket.work.name
    error_message = "a price table of the user's own is uploaded to the work bucket, named by its content"
  }
}

run "budget_limits_are_validated" {
  command = plan
  variables {
    max_run_cost_usd       = -1
    max_daily_cost_usd     = -5
    approval_timeout_hours = 0.5
  }
  expect_failures = [var.max_run_cost_usd, var.max_daily_cost_usd, var.approval_timeout_hours]
}

run "prices_file_is_validated" {
  command = plan
  variables { prices_file = "../README.md" }
  expect_failures = [var.prices_file]
}

run "prices_file_with_a_discount_out_of_range_is_refused" {
  command = plan
  variables { prices_file = "tests/fixtures/prices_bad_discount.json" }
  expect_failures = [var.prices_file]
}

run "name_prefix_is_validated" {
  command = plan
  variables { name_prefix = "Not_A_Prefix!" }
  expect_failures = [var.name_prefix]
}

run "name_prefix_longer_than_service_account_ids_allow_is_refused" {
  command = plan
  variables { name_prefix = "a-twenty-one-chr-pfx1" }
  expect_failures = [var.name_prefix]
}

run "longest_name_prefix" {
  command = plan
  variables { name_prefix = "a-twenty-char-prefix" }

  assert {
    condition     = alltrue([for key, role in google_project_iam_custom_role.pipeline : can(regex("^[a-zA-Z0-9_.]{3,64}$", role.role_id))])
    error_message = "custom role ids are valid with the longest prefix"
  }
  assert {
    condition     = length(google_storage_bucket.input.name) <= 63 && length(google_storage_bucket.work.name) <= 63
    error_message = "bucket names fit in 63 characters"
  }
}
