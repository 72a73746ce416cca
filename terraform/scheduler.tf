resource "google_cloud_scheduler_job" "poll_tick" {
  name     = "${var.name_prefix}-poll-tick"
  region   = var.region
  schedule = var.poll_schedule
  pubsub_target {
    topic_name = google_pubsub_topic.topics["poll-tick"].id
    data       = base64encode("{\"source\": \"cloud-scheduler\"}")
  }
  depends_on = [google_project_service.apis]
}
