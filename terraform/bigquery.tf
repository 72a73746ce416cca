resource "google_bigquery_dataset" "pipeline" {
  dataset_id = replace("${var.name_prefix}_pipeline", "-", "_")
  location   = var.region
  labels     = var.labels
  # checkov:skip=CKV_GCP_81: Google-managed encryption; a CMEK can be added by the user
  depends_on = [google_project_service.apis]
}

resource "google_bigquery_table" "predictions" {
  dataset_id          = google_bigquery_dataset.pipeline.dataset_id
  table_id            = "predictions"
  schema              = file("${path.module}/../shared/core/schemas/predictions.json")
  deletion_protection = var.deletion_protection
  clustering          = ["run_id", "outcome"]
  labels              = var.labels
  time_partitioning {
    type  = "DAY"
    field = "loaded_at"
  }
  # checkov:skip=CKV_GCP_80: Google-managed encryption; a CMEK can be added by the user
}

resource "google_bigquery_table" "batch_jobs" {
  dataset_id          = google_bigquery_dataset.pipeline.dataset_id
  table_id            = "batch_jobs"
  schema              = file("${path.module}/../shared/core/schemas/batch_jobs.json")
  deletion_protection = var.deletion_protection
  clustering          = ["run_id"]
  labels              = var.labels
  time_partitioning {
    type  = "DAY"
    field = "loaded_at"
  }
  # checkov:skip=CKV_GCP_80: Google-managed encryption; a CMEK can be added by the user
}

resource "google_bigquery_table" "latest_predictions" {
  dataset_id          = google_bigquery_dataset.pipeline.dataset_id
  table_id            = "latest_predictions"
  deletion_protection = false
  labels              = var.labels
  view {
    query = templatefile("${path.module}/../shared/core/schemas/latest_predictions.sql", {
      project = var.project_id
      dataset = google_bigquery_dataset.pipeline.dataset_id
    })
    use_legacy_sql = false
  }
  # checkov:skip=CKV_GCP_121: a view holds no data; recreating it loses nothing
  # checkov:skip=CKV_GCP_80: a view holds no data to encrypt
  depends_on = [google_bigquery_table.predictions]
}

# A row per run state worth seeing (runs.py loads them through the load windows); the runs view
# keeps each run's newest: what `gemini-batch runs` prints, for SQL and dashboards.
resource "google_bigquery_table" "run_states" {
  dataset_id          = google_bigquery_dataset.pipeline.dataset_id
  table_id            = "run_states"
  schema              = file("${path.module}/../shared/core/schemas/run_states.json")
  deletion_protection = var.deletion_protection
  clustering          = ["run_id"]
  labels              = var.labels
  time_partitioning {
    type  = "DAY"
    field = "updated_at"
  }
  # checkov:skip=CKV_GCP_80: Google-managed encryption; a CMEK can be added by the user
}

resource "google_bigquery_table" "runs" {
  dataset_id          = google_bigquery_dataset.pipeline.dataset_id
  table_id            = "runs"
  deletion_protection = false
  labels              = var.labels
  view {
    query = templatefile("${path.module}/../shared/core/schemas/runs.sql", {
      project = var.project_id
      dataset = google_bigquery_dataset.pipeline.dataset_id
    })
    use_legacy_sql = false
  }
  # checkov:skip=CKV_GCP_121: a view holds no data; recreating it loses nothing
  # checkov:skip=CKV_GCP_80: a view holds no data to encrypt
  depends_on = [google_bigquery_table.run_states]
}

locals {
  table_ids = {
    predictions        = google_bigquery_table.predictions.table_id
    batch_jobs         = google_bigquery_table.batch_jobs.table_id
    latest_predictions = google_bigquery_table.latest_predictions.table_id
    run_states         = google_bigquery_table.run_states.table_id
  }
}
