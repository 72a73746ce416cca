locals {
  topics = toset(["batch-requests", "poll-tick", "batch-finished", "batch-results", "dead-letter"])
}

# Dead letters are kept here for a week (a topic with no subscription drops what is published to it);
# the dead-letter alert watches its backlog (monitoring.tf).
resource "google_pubsub_subscription" "dead_letters" {
  name                       = "${var.name_prefix}-dead-letters"
  topic                      = google_pubsub_topic.topics["dead-letter"].id
  message_retention_duration = "604800s"
  ack_deadline_seconds       = 60
  expiration_policy {
    ttl = "" # never expires for being idle
  }
  labels = var.labels
}

resource "google_pubsub_topic" "topics" {
  for_each = local.topics
  name     = "${var.name_prefix}-${each.value}"
  labels   = var.labels
  # checkov:skip=CKV_GCP_83: Google-managed encryption; a CMEK can be added by the user
  depends_on = [google_project_service.apis]
}
