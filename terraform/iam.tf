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

# The Vertex AI service agent reads the staged inputs and writes predictions: in the Vertex I/O
# bucket, which holds nothing else (the ledger and the rows are in the work bucket).
resource "google_storage_bucket_iam_member" "vertex_agent_io" {
  bucket = google_storage_bucket.vertex.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_project_service_identity.vertex_agent.email}"
}

# The agent's own project role (roles/aiplatform.serviceAgent, granted by Google) reaches the
# project's buckets: a deny policy keeps it out of the work bucket (the ledger, the rows, reports),
# by a tag on that bucket (deny conditions can only name tags). Creating it needs the deployer to
# hold roles/iam.denyAdmin and roles/resourcemanager.tagAdmin + tagUser on the project
# (isolate_work_bucket = false skips it, README: deploy).
resource "google_tags_tag_key" "private" {
  count       = var.isolate_work_bucket ? 1 : 0
  parent      = "projects/${var.project_id}"
  short_name  = "${var.name_prefix}-private"
  description = "gemini-batch-pipeline: buckets the Vertex AI service agent must not reach (a deny policy names it)."
  depends_on  = [google_project_service.apis]
}

resource "google_tags_tag_value" "private" {
  count       = var.isolate_work_bucket ? 1 : 0
  parent      = google_tags_tag_key.private[0].id
  short_name  = "true"
  description = "The work bucket: ledger, rows, reports."
}

resource "google_tags_location_tag_binding" "work_private" {
  count     = var.isolate_work_bucket ? 1 : 0
  parent    = "//storage.googleapis.com/projects/_/buckets/${google_storage_bucket.work.name}"
  tag_value = google_tags_tag_value.private[0].id
  location  = var.region
}

resource "google_iam_deny_policy" "vertex_agent_work" {
  count        = var.isolate_work_bucket ? 1 : 0
  parent       = urlencode("cloudresourcemanager.googleapis.com/projects/${var.project_id}")
  name         = "${var.name_prefix}-vertex-agent-work"
  display_name = "gemini-batch-pipeline: the Vertex AI service agent stays out of the work bucket"
  rules {
    description = "The ledger, the rows and the reports are the pipeline's: Vertex reads and writes its own bucket only."
    deny_rule {
      denied_principals  = ["principal://iam.googleapis.com/projects/-/serviceAccounts/${google_project_service_identity.vertex_agent.email}"]
      denied_permissions = local.vertex_denied_permissions
      denial_condition {
        title      = "the work bucket"
        expression = "resource.matchTagId('${google_tags_tag_key.private[0].id}', '${google_tags_tag_value.private[0].id}')"
      }
    }
  }
  # After the functions that stage in the Vertex bucket serve (and, on an upgrade, once no job reads
  # or writes the work bucket any more: README, deploy).
  depends_on = [google_tags_location_tag_binding.work_private, google_project_service.apis, module.function]
}

locals {
  vertex_denied_permissions = [
    "storage.googleapis.com/objects.get",
    "storage.googleapis.com/objects.list",
    "storage.googleapis.com/objects.create",
    "storage.googleapis.com/objects.update",
    "storage.googleapis.com/objects.delete",
  ]
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

# Every function keeps the ledger, the rows and the reports in the work bucket.
resource "google_storage_bucket_iam_member" "work" {
  for_each = local.runtimes
  bucket   = google_storage_bucket.work.name
  role     = "roles/storage.objectUser"
  member   = each.value
}

# Every function stages inputs for Vertex and reads its outputs in the Vertex I/O bucket.
resource "google_storage_bucket_iam_member" "vertex_io" {
  for_each = local.runtimes
  bucket   = google_storage_bucket.vertex.name
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

# Custom roles with exactly the permissions the adapters call (the lists live next to them:
# shared/adapters/*.permissions.json). Vertex AI: batch jobs are created (admission runs in every
# function), read and found by every function; the poller cancels (stuck jobs, cancelled runs) and
# so does submit_request (a {"cancel"} message: gemini-batch cancel).
# BigQuery: jobs are created in the project; the tables are read and appended to, never created,
# altered or deleted (Terraform owns them). No predefined role is that narrow.
locals {
  vertex_methods   = jsondecode(file("${path.module}/../shared/adapters/vertex.permissions.json")).methods
  bigquery_methods = jsondecode(file("${path.module}/../shared/adapters/bigquery.permissions.json")).methods
  custom_roles = {
    vertex_jobs = {
      title       = "gemini-batch-pipeline: Vertex batch jobs"
      permissions = sort(distinct(flatten([for m in ["create", "get", "find"] : local.vertex_methods[m]])))
    }
    vertex_cancel = {
      title       = "gemini-batch-pipeline: cancel Vertex batch jobs"
      permissions = sort(distinct(local.vertex_methods["cancel"]))
    }
    bigquery_jobs = {
      title       = "gemini-batch-pipeline: BigQuery load and query jobs"
      permissions = sort(distinct(flatten([for m in values(local.bigquery_methods) : m.project])))
    }
    bigquery_tables = {
      title       = "gemini-batch-pipeline: read and append to the pipeline's tables"
      permissions = sort(distinct(flatten([for m in values(local.bigquery_methods) : m.table])))
    }
  }
  # Custom role ids take letters, digits, _ and . only; named here so that grants are known at plan.
  role_ids = { for key, _ in local.custom_roles : key => "${replace(var.name_prefix, "-", "_")}_${key}" }
  roles    = { for key, id in local.role_ids : key => "projects/${var.project_id}/roles/${id}" }
  # Which function holds which project-level role (modules/function grants them).
  function_roles = {
    submit_batch    = [local.roles.vertex_jobs, local.roles.bigquery_jobs]
    submit_request  = [local.roles.vertex_jobs, local.roles.vertex_cancel, local.roles.bigquery_jobs] # gemini-batch cancel
    collect_results = [local.roles.vertex_jobs, local.roles.bigquery_jobs]
    poll_batches    = [local.roles.vertex_jobs, local.roles.vertex_cancel, local.roles.bigquery_jobs]
  }
  # Every function loads or queries the pipeline's tables: collect_results (rows), the submitters
  # (rejected lines, output history, a run's summary, a retry's rows), poll_batches (the load
  # windows); every one writes run_states rows when it moves a run.
  table_grants = merge([
    for table in ["predictions", "batch_jobs", "latest_predictions", "run_states"] : {
      for fn in keys(local.functions) : "${table}/${fn}" => { table = table, fn = fn }
    }
  ]...)
}

resource "google_project_iam_custom_role" "pipeline" {
  for_each    = local.custom_roles
  project     = var.project_id
  role_id     = local.role_ids[each.key]
  title       = each.value.title
  description = "Exactly what the pipeline's code calls (shared/adapters/*.permissions.json)."
  permissions = each.value.permissions
  depends_on  = [google_project_service.apis]
}

# Each function reads and appends to the pipeline's tables and reads the view: nothing more.
resource "google_bigquery_table_iam_member" "tables" {
  for_each   = local.table_grants
  project    = var.project_id
  dataset_id = google_bigquery_dataset.pipeline.dataset_id
  table_id   = local.table_ids[each.value.table]
  role       = google_project_iam_custom_role.pipeline["bigquery_tables"].id
  member     = local.runtimes[each.value.fn]
}

# submit_request reads bq:// sources through the BigQuery Storage Read API (read sessions are
# created in the project: readSessionUser has no narrower scope).
resource "google_project_iam_member" "read_session_user" {
  project = var.project_id
  role    = "roles/bigquery.readSessionUser"
  member  = local.runtimes["submit_request"]
}

