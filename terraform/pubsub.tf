locals {
  topics = toset(["batch-requests", "poll-tick", "batch-finished", "batch-results", "dead-letter"])
}

resource "google_pubsub_topic" "topics" {
  for_each = local.topics
  name     = "${var.name_prefix}-${each.value}"
  labels   = var.labels
  # checkov:skip=CKV_GCP_83: Google-managed encryption; a CMEK can be added by the user
  depends_on = [google_project_service.apis]
}
