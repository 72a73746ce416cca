locals {
  apis = toset([
    "aiplatform.googleapis.com",           # Vertex AI batch prediction
    "bigquery.googleapis.com",             # predictions, batch_jobs, latest_predictions
    "bigquerystorage.googleapis.com",      # bq:// sources read with the Storage Read API
    "cloudbuild.googleapis.com",           # builds the functions
    "cloudfunctions.googleapis.com",       # the functions (2nd gen)
    "cloudscheduler.googleapis.com",       # the poll tick
    "eventarc.googleapis.com",             # triggers
    "pubsub.googleapis.com",               # topics
    "run.googleapis.com",                  # 2nd gen functions run on Cloud Run
    "storage.googleapis.com",              # buckets
    "artifactregistry.googleapis.com",     # function images
    "logging.googleapis.com",              # log-based metrics
    "monitoring.googleapis.com",           # alert policies, notification channels, the dashboard
    "iam.googleapis.com",                  # custom roles, the deny policy (IAM v2)
    "cloudresourcemanager.googleapis.com", # the work bucket's tag
  ])
}

resource "google_project_service" "apis" {
  for_each           = local.apis
  service            = each.value
  disable_on_destroy = false
}
