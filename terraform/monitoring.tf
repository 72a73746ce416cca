# Observability as code: log-based metrics from the functions' structured logs, alert policies that
# say what to do, and a dashboard (README: Observability).
#
# Every filter below matches log lines the code writes (a message, and fields of it): the
# local-cloud test tests/integration/test_observability.py evaluates each filter and extractor
# against the lines the functions really wrote, so a metric on a message nobody logs fails a test.
# Filters are written out in full (no interpolation) for that reason.

locals {
  log_metrics = {
    rows_loaded = {
      description = "Rows loaded into predictions, per outcome and model (one log line per outcome of each collected attempt)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"rows collected\""
      value       = "EXTRACT(jsonPayload.rows)"
      unit        = "1"
      labels      = { outcome = "EXTRACT(jsonPayload.outcome)", model = "EXTRACT(jsonPayload.model)" }
    }
    runs_completed = {
      description = "Runs completed and announced."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"run complete\""
      value       = null
      unit        = "1"
      labels      = { model = "EXTRACT(jsonPayload.model)" }
    }
    runs_rejected = {
      description = "Runs rejected: invalid files, unreadable sources, held runs rejected or expired."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND (jsonPayload.message=\"run rejected\" OR jsonPayload.message=\"run not approved\")"
      value       = null
      unit        = "1"
      labels      = {}
    }
    runs_awaiting_approval = {
      description = "Runs held by the budget guard (AWAITING_APPROVAL)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"run held for approval\""
      value       = null
      unit        = "1"
      labels      = {}
    }
    runs_overdue = {
      description = "Runs not complete run_sla_hours after they were created (logged once a run by the poller)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"run overdue\""
      value       = null
      unit        = "1"
      labels      = { status = "EXTRACT(jsonPayload.status)" }
    }
    run_failed_share = {
      description = "Share of FAILED and MISSING rows of each completed run."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"run complete\""
      value       = "EXTRACT(jsonPayload.failed_share)"
      unit        = "1"
      labels      = {}
    }
    function_events = {
      description = "Events each function handled, dropped (a permanent error: not retried) or failed (retried by its trigger)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=~\"^event (handled|failed|dropped)\""
      value       = null
      unit        = "1"
      labels = {
        function = "EXTRACT(jsonPayload.function)"
        outcome  = "REGEXP_EXTRACT(jsonPayload.message, \"^event (handled|failed|dropped)\")"
      }
    }
    stuck_jobs = {
      description = "Batch jobs the poller cancelled (queued or running past their deadlines) or gave up on (cancelling too long)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND (jsonPayload.message=\"batch job stuck: cancelled\" OR jsonPayload.message=\"batch job stuck cancelling: abandoned\")"
      value       = null
      unit        = "1"
      labels      = {}
    }
    handler_seconds = {
      description = "Wall seconds of each handled event, per function (submission and collection: the ones that stream files)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"event handled\" AND (jsonPayload.function=\"submit_batch\" OR jsonPayload.function=\"submit_request\" OR jsonPayload.function=\"collect_results\")"
      value       = "EXTRACT(jsonPayload.duration_s)"
      unit        = "s"
      labels      = { function = "EXTRACT(jsonPayload.function)" }
    }
    poll_ticks = {
      description = "Poll ticks done (the poller is alive and ticking)."
      filter      = "resource.type=\"cloud_run_revision\" AND jsonPayload.logger=~\"^gbp\" AND jsonPayload.message=\"poll done\""
      value       = null
      unit        = "1"
      labels      = {}
    }
  }
  metric_type = { for key, _ in local.log_metrics : key => "logging.googleapis.com/user/${var.name_prefix}/${key}" }
}

resource "google_logging_metric" "pipeline" {
  for_each    = local.log_metrics
  name        = "${var.name_prefix}/${each.key}"
  description = each.value.description
  filter      = each.value.filter
  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = each.value.value == null ? "INT64" : "DISTRIBUTION"
    unit         = each.value.unit
    display_name = "${var.name_prefix} ${replace(each.key, "_", " ")}"
    dynamic "labels" {
      for_each = each.value.labels
      content {
        key        = labels.key
        value_type = "STRING"
      }
    }
  }
  label_extractors = each.value.labels
  value_extractor  = each.value.value
  # A share in [0, 1]: 100 buckets of 0.01 (a percentile is then exact to a point, whatever the
  # threshold); rows and seconds: exponential.
  dynamic "bucket_options" {
    for_each = each.value.value != null && each.key == "run_failed_share" ? [each.key] : []
    content {
      linear_buckets {
        num_finite_buckets = 101 # 1.0 (every row failed) in a finite bucket too
        width              = 0.01
        offset             = 0
      }
    }
  }
  dynamic "bucket_options" {
    for_each = each.value.value != null && each.key != "run_failed_share" ? [each.key] : []
    content {
      exponential_buckets {
        num_finite_buckets = 32
        growth_factor      = 2
        scale              = 0.01
      }
    }
  }
  depends_on = [google_project_service.apis]
}

resource "google_monitoring_notification_channel" "email" {
  for_each     = toset(var.alert_emails)
  display_name = "${var.name_prefix} alerts: ${each.value}"
  type         = "email"
  labels       = { email_address = each.value }
  depends_on   = [google_project_service.apis]
}

locals {
  channels = [for channel in google_monitoring_notification_channel.email : channel.id]
  # Alerts on a log-based counter: any count in the window.
  counter_alerts = {
    events_dropped = {
      title  = "an event was dropped (permanent error: not retried)"
      filter = "metric.type=\"${local.metric_type.function_events}\" AND resource.type=\"cloud_run_revision\" AND metric.label.outcome=\"dropped\""
      doc    = "A function refused an event for good: a malformed message or upload, a too-old event, or a permanent error (its reason is in the log line). Nothing was retried. Find it: Cloud Logging, `jsonPayload.message=~\"^event dropped\"`, its `error` and `function`. Fix the input and submit it again (upload again: a new generation is a new run). A run it concerned keeps what the ledger records."
    }
    stuck_jobs = {
      title  = "a batch job was stuck (cancelled or abandoned by the poller)"
      filter = "metric.type=\"${local.metric_type.stuck_jobs}\" AND resource.type=\"cloud_run_revision\""
      doc    = "A Vertex batch job stayed queued past QUEUE_TIMEOUT_SECONDS or ran past RUN_TIMEOUT_SECONDS, and the poller cancelled it (its rows are retried as a new attempt), or it stayed cancelling past CANCEL_TIMEOUT_SECONDS and was abandoned. Look at the job: `jsonPayload.message=~\"^batch job stuck\"` gives `job_name`; `SELECT * FROM dataset.batch_jobs WHERE stuck`. Repeated: Vertex capacity in the region (ask Google, or move the region)."
    }
    runs_overdue = {
      title  = "a run is not complete after run_sla_hours"
      filter = "metric.type=\"${local.metric_type.runs_overdue}\" AND resource.type=\"cloud_run_revision\""
      doc    = "A run has not completed within run_sla_hours of its upload. `jsonPayload.message=\"run overdue\"` gives `run_id` and `status`: AWAITING_APPROVAL waits for a person (approve or reject it); SUBMITTING, a large file still staging or a submitter failing (its events' errors); RUNNING, jobs queued behind MAX_CONCURRENT_JOBS or slow on Vertex (`ledger/jobs/<run>/`, `batch_jobs`)."
    }
    dead_letters = {
      title  = "messages wait in the dead-letter subscription"
      filter = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letters.name}\""
      doc    = "Events were retried until their subscription gave up and dead-lettered them; they wait in the `${google_pubsub_subscription.dead_letters.name}` subscription (kept 7 days). Pull them, find why in the function's log lines (`jsonPayload.message=\"event failed: will be retried\"`), fix the cause, and republish them to their topic: every handler is idempotent. Acknowledge them once done."
    }
    # 500 is a handler's own "retry me" (a transient error, counted by the error-rate alert): not here.
    function_5xx = {
      title  = "a function timed out or crashed (5xx other than its own 500)"
      filter = "metric.type=\"run.googleapis.com/request_count\" AND resource.type=\"cloud_run_revision\" AND resource.label.service_name=starts_with(\"${var.name_prefix}-\") AND metric.label.response_code_class=\"5xx\" AND metric.label.response_code!=\"500\""
      doc    = "A function's request ended in a 5xx that is not its own 500 (a transient error it asked to be retried): an instance killed at its timeout (504) or out of memory, which no log line of ours reports. Look at its Cloud Run logs for `Memory limit` or a timeout, and at its size in `functions.tf` (README: Capacity). The event is retried; a steady rate is a bug or an undersized function."
    }
  }
}

resource "google_monitoring_alert_policy" "counters" {
  for_each              = local.counter_alerts
  display_name          = "${var.name_prefix}: ${each.value.title}"
  combiner              = "OR"
  notification_channels = local.channels
  alert_strategy {
    auto_close = "1800s" # a log metric goes silent rather than back to 0: close the incident after 30 min
  }
  conditions {
    display_name = each.value.title
    condition_threshold {
      filter          = each.value.filter
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  documentation {
    content   = each.value.doc
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.pipeline]
}

resource "google_monitoring_alert_policy" "error_rate" {
  display_name          = "${var.name_prefix}: a function's error rate is above ${var.alert_thresholds.error_rate * 100}%"
  combiner              = "OR"
  notification_channels = local.channels
  conditions {
    display_name = "failed events / all events, per function, over 15 min"
    condition_threshold {
      filter             = "metric.type=\"${local.metric_type.function_events}\" AND resource.type=\"cloud_run_revision\" AND metric.label.outcome=\"failed\""
      denominator_filter = "metric.type=\"${local.metric_type.function_events}\" AND resource.type=\"cloud_run_revision\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.alert_thresholds.error_rate
      duration           = "0s"
      aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function"]
      }
      denominator_aggregations {
        alignment_period     = "900s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.function"]
      }
    }
  }
  documentation {
    content   = "Many of a function's events fail and are retried: a service it calls answers errors (BigQuery, Vertex, GCS quota or outage), or a bug. Nothing is lost while retries last, but runs slow down. Look at `jsonPayload.message=\"event failed: will be retried\"` for that function: the `stack_trace` says which call. An outage passes; a quota (429) is waited out by the pipeline; anything else is a bug to report."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.pipeline]
}

resource "google_monitoring_alert_policy" "failed_share" {
  display_name          = "${var.name_prefix}: a run's failed share is above ${var.alert_thresholds.failed_share * 100}%"
  combiner              = "OR"
  notification_channels = local.channels
  conditions {
    display_name = "FAILED + MISSING rows / rows of a completed run"
    condition_threshold {
      filter          = "metric.type=\"${local.metric_type.run_failed_share}\" AND resource.type=\"cloud_run_revision\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_thresholds.failed_share
      duration        = "0s"
      aggregations {
        alignment_period     = "300s" # few runs complete in 5 min: their p99 is their worst
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
      }
    }
  }
  documentation {
    content   = "A run completed with many rows FAILED or MISSING after its retries. `jsonPayload.message=\"run complete\"` gives `run_id`; then `SELECT error_status, error_message, retryable, COUNT(*) FROM dataset.latest_predictions WHERE run_id = 'r…' AND outcome IN ('FAILED', 'MISSING') GROUP BY 1, 2, 3`. INVALID_ARGUMENT: the requests (fix and resubmit); RESOURCE_EXHAUSTED or a job-level reason: capacity (resubmit later)."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.pipeline]
}

resource "google_monitoring_alert_policy" "poll_silence" {
  display_name          = "${var.name_prefix}: the poller is not ticking"
  combiner              = "OR"
  notification_channels = local.channels
  conditions {
    display_name = "no poll tick for ${var.alert_thresholds.poll_silence} s"
    condition_absent {
      filter   = "metric.type=\"${local.metric_type.poll_ticks}\" AND resource.type=\"cloud_run_revision\""
      duration = "${var.alert_thresholds.poll_silence}s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_SUM"
        cross_series_reducer = "REDUCE_SUM"
      }
      trigger {
        count = 1
      }
    }
  }
  documentation {
    content   = "No poll tick has finished for a while: nothing follows Vertex jobs, admits queued ones, loads windows or redrives stalled work. Check the Cloud Scheduler job (`${google_cloud_scheduler_job.poll_tick.name}`: paused? failing?) and poll_batches' log lines (`jsonPayload.function=\"poll_batches\"`, `severity>=WARNING`). Work resumes where the ledger stands once ticks come back."
    mime_type = "text/markdown"
  }
  depends_on = [google_logging_metric.pipeline]
}

resource "google_monitoring_dashboard" "pipeline" {
  dashboard_json = templatefile("${path.module}/dashboards/pipeline.json", {
    prefix        = var.name_prefix
    promql_prefix = replace(var.name_prefix, "-", "_") # PromQL metric names turn "-" into "_"
    dead_letters  = google_pubsub_subscription.dead_letters.name
  })
  depends_on = [google_logging_metric.pipeline]
}
