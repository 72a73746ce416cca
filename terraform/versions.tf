terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.46, < 9.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 7.46, < 9.0"
    }
  }
}
