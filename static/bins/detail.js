// The open capture: copy-as, resend edits and delivery history (templates/bins/_detail.html).
