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
  # checkov:skip=CKV_GCP_62: access logs go to Cloud Audit Logs (data access) when the user enables them
  # checkov:skip=CKV_GCP_78: the ledger is rewritten with generation preconditions; versions would only pile up
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
