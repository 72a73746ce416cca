provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
