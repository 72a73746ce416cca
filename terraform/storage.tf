locals {
  bucket_suffix = var.project_id
}

resource "google_storage_bucket" "input" {
  name                        = "${var.name_prefix}-input-${local.bucket_suffix}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  versioning {
    enabled = false # a re-upload is a new generation, hence a new run
  }
  # checkov:skip=CKV_GCP_62: access logs go to Cloud Audit Logs (data access) when the user enables them
  # checkov:skip=CKV_GCP_78: versioning off on purpose: every upload generation is its own run
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "work" {
  name                        = "${var.name_prefix}-work-${local.bucket_suffix}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  # Work files are deleted a while after their run finished, never before: the pipeline sets
  # their custom time once the run is complete (or rejected). A job may wait 72 h queued and a
  # collection may wait for an operator, so age alone does not delete them...
  lifecycle_rule {
    condition {
      days_since_custom_time = var.work_retention_days
      matches_prefix         = ["staging/", "rows/", "outputs/"]
    }
    action {
      type = "Delete"
    }
  }
  # ...except as a backstop, long after any run can still need them: files written after their
  # run was done (a replaced holder's, an abandoned job's late outputs) never get a custom time.
  lifecycle_rule {
    condition {
      age            = var.work_backstop_days
      matches_prefix = ["staging/", "rows/", "outputs/"]
    }
    action {
      type = "Delete"
    }
  }
  # The day's spend markers, approval reports, retry answers and cancel requests: read for a day or a
  # decision, kept a while for audit.
  lifecycle_rule {
    condition {
      age            = var.work_backstop_days
      matches_prefix = ["ledger/spend/", "ledger/overdue/", "ledger/retries/", "ledger/cancel/", "approvals/"]
    }
    action {
      type = "Delete"
    }
  }
  # checkov:skip=CKV_GCP_62: access logs go to Cloud Audit Logs (data access) when the user enables them
  # checkov:skip=CKV_GCP_78: the ledger is rewritten with generation preconditions; versions would only pile up
  depends_on = [google_project_service.apis]
}

# Vertex's inputs and outputs (staging/, outputs/), in a bucket of their own: the Vertex AI service
# agent is shared by every Vertex workload of the project and gets this bucket, nothing else of ours.
resource "google_storage_bucket" "vertex" {
  name                        = "${var.name_prefix}-vertex-${local.bucket_suffix}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  # As the work bucket's: deleted a while after their run's custom time, with a backstop.
  lifecycle_rule {
    condition {
      days_since_custom_time = var.work_retention_days
      matches_prefix         = ["staging/", "outputs/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      age            = var.work_backstop_days
      matches_prefix = ["staging/", "outputs/"]
    }
    action {
      type = "Delete"
    }
  }
  # checkov:skip=CKV_GCP_62: access logs go to Cloud Audit Logs (data access) when the user enables them
  # checkov:skip=CKV_GCP_78: every file is written once under its holder's own name; versions would only pile up
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket" "source" {
  name                        = "${var.name_prefix}-source-${local.bucket_suffix}"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  labels                      = var.labels
  # checkov:skip=CKV_GCP_62: holds only hash-named function zips
  # checkov:skip=CKV_GCP_78: zips are hash-named: a new build is a new object
  depends_on = [google_project_service.apis]
}

# A price table of the user's own (var.prices_file), named by its content: a new table is a new
# object, and the functions' PRICES_URI moves to it in the same apply.
resource "google_storage_bucket_object" "prices" {
  count        = var.prices_file == null ? 0 : 1
  bucket       = google_storage_bucket.work.name
  name         = "config/prices-${filemd5(var.prices_file)}.json"
  source       = var.prices_file
  content_type = "application/json"
  lifecycle {
    create_before_destroy = true # the functions move to the new name before the old object goes
  }
}
